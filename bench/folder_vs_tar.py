"""The same images as a folder and as WebDataset-style tars, mined end to end, side by side.

    python bench/folder_vs_tar.py --images 2000

Both run the local executor's stage list (flows/direct.py: ingest, embed, K-means, band mining, template
instructions, packing) into fresh roots. The tars hold 1,000 members each. Goal: within 1.2x of each
other (a tar member is read with one seek through a per-tar header index, never a re-scan of the tar).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--per-tar", type=int, default=1000)
    args = ap.parse_args()
    from flows.direct import run_mining
    from schemas.config import RunConfig
    from tasks.demo_corpus import generate_variants

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        files = sorted(generate_variants(folder, args.images))
        tars = Path(tmp) / "tars"
        tars.mkdir()
        for i in range(0, len(files), args.per_tar):
            with tarfile.open(tars / f"part-{i // args.per_tar:04d}.tar", "w") as tar:
                for f in files[i : i + args.per_tar]:
                    tar.add(f, arcname=f.name)
        times, samples = {}, {}
        for name, src in (("folder", folder), ("tars", tars)):
            t0 = time.perf_counter()
            res = run_mining(RunConfig(root=str(Path(tmp) / f"root-{name}")), source=str(src),
                             writer={"kind": "template"})
            times[name] = time.perf_counter() - t0
            samples[name] = res["general_editing"]["shards"]["samples"]
    print(f"{args.images} generated images; packed samples: folder {samples['folder']}, tars {samples['tars']}")
    print(f"{'a folder of files (baseline)':<34} {times['folder']:7.2f} s")
    print(f"{'the same images in tars':<34} {times['tars']:7.2f} s   ratio {times['tars'] / times['folder']:.2f}x")


if __name__ == "__main__":
    main()
