"""Ingest throughput (images/s) against a bare PIL decode loop over the same files.

    python bench/ingest_throughput.py [--images 600] [--workers 1 2]

Builds a corpus of distinct JPEG/PNG photos from the demo corpus (each copy re-encoded with a
different quality so every file is a distinct image), then times:
  baseline  - one process: read bytes, PIL open + load + convert("RGB"); no hashing, no checks, no output
  aceforge  - tasks.ingest.ingest with N decode processes: hashing, checks, quarantine, dedup, parquet
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from schemas.config import IngestConfig  # noqa: E402
from tasks.demo_corpus import build_demo_corpus  # noqa: E402
from tasks.ingest import ingest  # noqa: E402


def make_corpus(out: Path, n: int) -> list[Path]:
    demo = out / "demo"
    build_demo_corpus(demo)
    photos = sorted((demo / "photos").rglob("*.*"))
    files = []
    for i in range(n):
        src = Image.open(photos[i % len(photos)]).convert("RGB")
        src.putpixel((0, 0), (i % 256, i // 256 % 256, 7))  # every file a distinct image
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        path = out / "corpus" / f"img{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        src.save(buf, format=fmt, **({"quality": 60 + i % 40} if fmt == "JPEG" else {"compress_level": 1 + i % 9}))
        path.write_bytes(buf.getvalue())
        files.append(path)
    return files


def baseline(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        with Image.open(io.BytesIO(f.read_bytes())) as im:
            im.convert("RGB").load()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = make_corpus(tmp_path, args.images)
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"corpus: {len(files)} images, {mb:.1f} MiB, ~384 px long side, {os.cpu_count()} cores")
        base = baseline(files)
        print(f"{'baseline PIL decode, 1 process':<36} {len(files) / base:8.1f} images/s")
        for w in args.workers:
            t0 = time.perf_counter()
            rep = ingest(str(tmp_path / "corpus"), str(tmp_path / f"root{w}"), IngestConfig(workers=w), force=True)
            dt = time.perf_counter() - t0
            assert rep.accepted == len(files), rep.to_dict()
            print(f"{f'aceforge ingest, {w} process(es)':<36} {len(files) / dt:8.1f} images/s  "
                  f"({base / dt:.2f}x the baseline's rate)")


if __name__ == "__main__":
    main()
