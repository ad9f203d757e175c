"""bench/gpu.py runs: on CPU at toy sizes of the same classes (--dry-run, in the default suite, so it cannot rot
without a GPU), and on a CUDA machine at full size (marked gpu)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = ("sam", "owlv2", "siglip", "depth", "hed")


def _run(tmp_path, *args, timeout=900):
    out = tmp_path / "gpu_bench.json"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), *args, "--json", str(out)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout, json.loads(out.read_text())


def test_dry_run_measures_every_model_beside_its_bare_call_on_cpu(tmp_path):
    stdout, rows = _run(tmp_path, "--dry-run")
    what = {r["what"]: r for r in rows}
    for m in MODELS:
        for side in ("ours", "bare"):
            r = what[f"{m} ({side})"]
            assert r["device"] == "cpu" and r["images_per_s"] > 0 and r["peak_rss_mb"] > 0
            assert f"{m} ({side})" in stdout
    assert what["siglip batch 4"]["images_per_s"] > 0 and what["ocr rapidocr"]["images_per_s"] > 0
    assert not any("train step" in r["what"] for r in rows)  # the FLUX step runs on CUDA only


@pytest.mark.gpu
def test_full_size_on_cuda(tmp_path):
    _, rows = _run(tmp_path, "--device", "cuda", "--images", "4", timeout=600)
    for m in MODELS:
        r = next(r for r in rows if r["what"] == f"{m} (ours)")
        assert r["device"] == "cuda" and r["peak_gpu_mb"] > 0
    step = next(r for r in rows if r["what"].startswith("flux lora train step"))
    assert step["returncode"] == 0
