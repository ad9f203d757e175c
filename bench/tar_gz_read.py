"""Reading every member of a .tar.gz the way later stages do (one `read_uri` per catalog row) against one
raw sequential tarfile pass over the same file, side by side.

    python bench/tar_gz_read.py --images 2000

baseline  - `tarfile.open(mode="r|gz")`, every member's bytes read in one pass (no random access at all)
ours      - `store.sources.read_uri` of every member, the index built by the first read (caches cleared
            before each run): in catalog order (by URI) and shuffled
scan      - (--scan N) what a member read cost before the gzip index: a decompression from the tar's start
            up to the member, for N members in shuffled order; its time per member is printed

Goal: ours within ~2x the raw pass in either order (it inflates every byte once to index, then at most
gzindex.SPACING bytes more per member); scan grows with the tar (quadratic over a catalog).
"""

from __future__ import annotations

import argparse
import random
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import Side, interleave, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scan", type=int, default=0, help="also time N member reads by a scan from the start")
    args = ap.parse_args()
    from store import sources
    from stages.corpus.demo_corpus import generate_variants

    with tempfile.TemporaryDirectory() as tmp:
        files = generate_variants(Path(tmp) / "img", args.images)
        gz = Path(tmp) / "corpus.tar.gz"
        with tarfile.open(gz, "w:gz") as tar:
            for p in files:
                tar.add(p, arcname=p.name)
        names = sorted(p.name for p in files)
        uris = [sources.member_uri(str(gz), n) for n in names]
        shuffled = random.Random(0).sample(uris, len(uris))
        total = sum(p.stat().st_size for p in files)
        print(f"{args.images} JPEG members, {total / 2**20:.1f} MiB, {gz.stat().st_size / 2**20:.1f} MiB gzip")

        def raw_pass() -> int:
            n = 0
            with tarfile.open(gz, "r|gz") as tar:
                for m in tar:
                    n += len(tar.extractfile(m).read())
            return n

        def ours(order: list[str]):
            def run() -> int:
                sources._gz_tar_index.cache_clear()
                return sum(len(sources.read_uri(u)) for u in order)
            return run

        t = interleave([Side("baseline", raw_pass), Side("ours, catalog order", ours(uris)),
                        Side("ours, shuffled", ours(shuffled))], rounds=args.rounds)
        assert {s.result for s in t.values()} == {total}, {k: s.result for k, s in t.items()}
        print("\n".join(report(t, baseline="baseline",
                               labels={"baseline": "baseline: one raw tarfile pass"})))
        if args.scan:
            import time

            def scan(name: str) -> int:
                with tarfile.open(gz, "r|gz") as tar:
                    for m in tar:
                        if m.name == name:
                            return len(tar.extractfile(m).read())
                return 0

            picked = random.Random(1).sample(names, min(args.scan, len(names)))
            t0 = time.perf_counter()
            for n in picked:
                scan(n)
            per = (time.perf_counter() - t0) / len(picked)
            print(f"{'scan from the start per read':<36} {per * 1e3:8.1f} ms a member; x {len(names)} members "
                  f"~ {per * len(names):.0f} s")


if __name__ == "__main__":
    main()
