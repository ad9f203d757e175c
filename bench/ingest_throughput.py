"""Ingest throughput (images/s) against a bare PIL decode loop over the same files.

    python bench/ingest_throughput.py [--images 600] [--workers 1 2] [--rounds 3]

Builds a corpus of distinct JPEG/PNG photos from the demo corpus (each copy re-encoded with a
different quality so every file is a distinct image), then times:
  baseline  - one process: read bytes, PIL open + load + convert("RGB"); no hashing, no checks, no output
  aceforge  - stages.corpus.ingest.ingest with N decode processes: hashing, checks, quarantine, dedup, parquet
The baseline and each worker count run interleaved for --rounds rounds (each ingest into a fresh root);
rates are of the best runs (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from bench._timing import Side, interleave, ratio, report  # noqa: E402
from schemas.config import IngestConfig  # noqa: E402
from stages.corpus.demo_corpus import build_demo_corpus  # noqa: E402
from stages.corpus.ingest import ingest  # noqa: E402


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


def baseline(files: list[Path]) -> None:
    for f in files:
        with Image.open(io.BytesIO(f.read_bytes())) as im:
            im.convert("RGB").load()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = make_corpus(tmp_path, args.images)
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"corpus: {len(files)} images, {mb:.1f} MiB, ~384 px long side, {os.cpu_count()} cores")
        runs = itertools.count()
        fresh = lambda: str(tmp_path / f"root{next(runs)}")  # noqa: E731
        sides = [Side("baseline", lambda: baseline(files))] + [
            Side(f"w{w}", lambda root, w=w: ingest(str(tmp_path / "corpus"), root, IngestConfig(workers=w),
                                                   force=True), setup=fresh) for w in args.workers]
        t = interleave(sides, rounds=args.rounds)
    labels = {"baseline": "baseline PIL decode, 1 process", **{f"w{w}": f"aceforge ingest, {w} process(es)"
                                                               for w in args.workers}}
    print(f"{args.rounds} interleaved rounds; rates of the best runs")
    print("\n".join(report(t, "baseline", labels=labels)))
    print(f"{labels['baseline']:<36} {len(files) / t['baseline'].best:8.1f} images/s")
    for w in args.workers:
        rep = t[f"w{w}"].result
        assert rep.accepted == len(files), rep.to_dict()
        print(f"{labels[f'w{w}']:<36} {len(files) / t[f'w{w}'].best:8.1f} images/s  "
              f"({1 / ratio(t, f'w{w}', 'baseline'):.2f}x the baseline's rate)")


if __name__ == "__main__":
    main()
