"""The same images as a folder and as WebDataset-style tars, mined end to end, side by side.

    python bench/folder_vs_tar.py --images 2000 [--rounds 3]

Both run the local executor's stage list (flows/direct.py: ingest, embed, K-means, band mining, template
instructions, packing) into fresh roots. The tars hold 1,000 members each. Goal: within 1.2x of each
other (a tar member is read with one seek through a per-tar header index, never a re-scan of the tar). The two
run interleaved for --rounds rounds, each run into a fresh root; the ratio is of the best runs (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import Side, interleave, ratio, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--per-tar", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    from flows.direct import run_mining
    from schemas.config import RunConfig
    from stages.corpus.demo_corpus import generate_variants

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        files = sorted(generate_variants(folder, args.images))
        tars = Path(tmp) / "tars"
        tars.mkdir()
        for i in range(0, len(files), args.per_tar):
            with tarfile.open(tars / f"part-{i // args.per_tar:04d}.tar", "w") as tar:
                for f in files[i : i + args.per_tar]:
                    tar.add(f, arcname=f.name)
        runs = itertools.count()

        def fresh_root() -> str:  # untimed: the previous run's roots are removed first, to bound the disk used
            for old in Path(tmp).glob("root-*"):
                shutil.rmtree(old)
            return str(Path(tmp) / f"root-{next(runs)}")

        def side(name: str, src: Path) -> Side:
            return Side(name, lambda root: run_mining(RunConfig(root=root), source=str(src),
                                                      writer={"kind": "template"})["general_editing"]["shards"]
                        ["samples"], setup=fresh_root)

        t = interleave([side("folder", folder), side("tars", tars)], rounds=args.rounds)
    print(f"{args.images} generated images; packed samples: folder {t['folder'].result}, tars {t['tars'].result}; "
          f"{args.rounds} interleaved rounds")
    print("\n".join(report(t, "folder", width=34, labels={"folder": "a folder of files (baseline)",
                                                           "tars": "the same images in tars"})))
    print(f"ratio {ratio(t, 'tars', 'folder'):.2f}x, of bests (goal <= 1.2x)")


if __name__ == "__main__":
    main()
