"""End to end on a planted corpus (bench/quality_corpus.py: grey sources, text and text-like textures, faces,
style families, near-duplicate chains of different photos): every task on, then `aceforge shards audit` over
every packed set finds nothing, and the checks that should fire on the plants did."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from schemas.config import FACE_TASKS, SYNTH_TASKS
from store import storage
from tests.flows.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_set_of_a_planted_corpus_passes_the_audit(tmp_path, prefect_results):
    src, root = tmp_path / "src", tmp_path / "root"
    subprocess.run([sys.executable, str(ROOT / "bench" / "quality_corpus.py"), "--out", str(src), "--n", "160"],
                   check=True, capture_output=True, timeout=600)
    cfg = {"root": str(root), "mining": {"k": 2, "presets": ["general_editing", "series_generation"]},
           "synthesis": {"tasks": list(SYNTH_TASKS) + list(FACE_TASKS), "fraction": 0.3, "max_side": 256,
                         "partition_size": 60, "text": {"fraction": 1.0, "max_images": 40}}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    # every task over ~40 stage runs and their units: 10 min or more on 2 busy cores
    res = run_cli(["mine", str(src), "--root", str(root), "-c", str(tmp_path / "cfg.yaml")], timeout=1800)
    assert res.exit_code == 0, res.output[-3000:]
    sets = sorted(p for p in (root / "shards").iterdir() if (p / "manifest.parquet").exists())
    assert len(sets) == 4, sets  # two mined presets, synthesis and its chains
    dropped: dict[str, int] = {}
    for s in sets:
        out = run_cli(["shards", "audit", str(s)])
        assert out.exit_code == 0 and " 0 failing" in out.output, out.output[-2000:]
        marker = storage.read_marker(str(s))
        sup = marker["supervision"]
        for reasons in sup["dropped"].values():
            for why, n in reasons.items():
                dropped[why] = dropped.get(why, 0) + n
        assert sum(sup["checked"].values()) == marker["samples"] + sum(sum(r.values()) for r in sup["dropped"].values())
    assert dropped.get("already_grey", 0) > 0, dropped  # the grey sources were planted
    text = storage.read_marker(str(root / "synth" / "text"))["counts"]
    assert text["dropped"].get("text_removal: text_unconfirmed", 0) > 0, text["dropped"]  # text-like textures
