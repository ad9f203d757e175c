"""One run on a GPU node, one table: the models of the pipeline with full-size architectures and random weights
(bench/_fullsize.py), each beside its bare library call (bench/models.py), SigLIP img/s over a batch sweep, OCR
img/s (rapidocr with its default CPU provider; the row says whether onnxruntime's CUDA provider is installed), and the full-size FLUX LoRA
train step (bench/train_step.py --full-size: tokens/s and MFU). Prints the table and writes it as JSON.

    python bench/gpu.py                          # CUDA when present, else CPU
    python bench/gpu.py --device cpu             # CPU (slow at full size)
    python bench/gpu.py --dry-run                # toy sizes of the same classes on CPU, in one process (CI)

Not measured here (yet): LaMa inpainting (no architecture ships in a library: big-lama is a TorchScript file),
band mining against faiss-gpu and K-means on GPU (bench/band_mining.py and bench/kmeans.py measure them on CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import models as M  # noqa: E402


def siglip_sweep(models: Path, device: str, batches: tuple[int, ...], tiny: bool) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    from mining.models.embedders import SiglipEmbedder

    rows = []
    side = 64 if tiny else 224
    emb = SiglipEmbedder(models, device=device)
    emb.setup()  # loaded once; each batch size is a setting of the same model
    for b in batches:
        emb.batch_size = b
        imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8))
                for i in range(b)]
        emb(imgs)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        emb(imgs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append({"what": f"siglip batch {b}", "device": device, "images_per_s": b / (time.perf_counter() - t)})
    return rows


def ocr_rate(n: int, tiny: bool) -> dict:
    import onnxruntime

    from mining.text.ocr import make_ocr

    ocr = make_ocr("rapidocr", "models")
    imgs = M.images(n, tiny)
    ocr(imgs[0])
    t = time.perf_counter()
    for im in imgs:
        ocr(im)
    return {"what": "ocr rapidocr", "device": "onnxruntime, rapidocr's default (CPU) provider",
            "cuda_provider_installed": "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
            "images_per_s": n / (time.perf_counter() - t)}


def train_step(device: str) -> dict | None:
    if not device.startswith("cuda"):
        return None
    res = subprocess.run([sys.executable, str(Path(__file__).parent / "train_step.py"), "--full-size"],
                         capture_output=True, text=True)
    return {"what": "flux lora train step (full size)", "device": device, "returncode": res.returncode,
            "output": res.stdout.strip().splitlines()[-8:] or res.stderr.strip().splitlines()[-3:]}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on CPU in one process: the code runs")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--json", default="gpu_bench.json")
    a = ap.parse_args(argv)
    tiny = a.dry_run
    device = "cpu" if a.dry_run else a.device
    n = 1 if tiny else a.images
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        info = M.build(models, list(M.MODELS), tiny)
        for r in M.measure(models, list(M.MODELS), device, n, tiny, 1 if tiny else 2, info, inprocess=tiny):
            rows.append({"what": f"{r['model']} ({r['side']})", **{k: v for k, v in r.items()
                                                                   if k not in ("model", "side")}})
        rows += siglip_sweep(models, device, (1, 4) if tiny else (1, 8, 32, 128, 256), tiny)
    rows.append(ocr_rate(n, tiny))
    if (step := train_step(device)) is not None:
        rows.append(step)
    for r in rows:
        rate = f"{r['images_per_s']:10.2f} img/s" if "images_per_s" in r else ""
        mem = "".join(f"  {k} {r[k]:.0f}" for k in ("peak_rss_mb", "peak_gpu_mb") if k in r)
        print(f"{r['what']:<34} {r['device']:<24} {rate}{mem}")
        for line in r.get("output", []):
            print(f"    {line}")
    Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
