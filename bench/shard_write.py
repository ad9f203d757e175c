"""Shard writing throughput against raw tar writing of the same members.

    python bench/shard_write.py [--samples 2000] [--maxcount 500] [--rounds 3]

baseline  - tarfile writing the already-encoded members of every sample into one tar, no checks
aceforge  - store.shards.write_shard_set: encode, ShardWriter, temp name + rename, sha256, stats,
            manifest and marker
The sides run interleaved for --rounds rounds, each into a fresh path; rates are of the best runs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench._timing import Side, interleave, ratio, report  # noqa: E402
from schemas.config import ShardConfig  # noqa: E402
from schemas.shard_layout import encode_sample  # noqa: E402
from store.shards import write_shard_set  # noqa: E402
from tests.conftest import make_sample  # noqa: E402


def raw_tar(samples, path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for s in samples:
            raw = encode_sample(s)
            key = raw.pop("__key__")
            for ext, data in sorted(raw.items()):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--maxcount", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    samples = [make_sample(i, rng, with_mask=i % 2 == 0) for i in range(args.samples)]
    runs = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        write_shard_set(samples[:2], str(Path(tmp) / "warm"))  # one-time imports (pyarrow pulls pandas)
        fresh = lambda: Path(tmp) / f"run{next(runs)}"  # noqa: E731
        t = interleave([Side("baseline", lambda p: raw_tar(samples, p.with_suffix(".tar")) or p, setup=fresh),
                        Side("aceforge", lambda p: write_shard_set(samples, str(p),
                                                                   ShardConfig(maxcount=args.maxcount)),
                             setup=fresh)], rounds=args.rounds)
        mb = t["baseline"].result.with_suffix(".tar").stat().st_size / 2**20
    base, ours, rep = t["baseline"].best, t["aceforge"].best, t["aceforge"].result
    print(f"{args.samples} samples, {mb:.1f} MiB of tar, {args.rounds} interleaved rounds, rates of the best runs")
    print("\n".join(report(t, "baseline", width=28, labels={"baseline": "baseline raw tarfile",
                                                             "aceforge": "aceforge write_shard_set"})))
    print(f"{'baseline raw tarfile':<28} {args.samples / base:9.0f} samples/s {mb / base:8.1f} MiB/s")
    print(f"{'aceforge write_shard_set':<28} {args.samples / ours:9.0f} samples/s {mb / ours:8.1f} MiB/s  "
          f"({rep.shards} shards; {ratio(t, 'aceforge', 'baseline'):.2f}x the baseline's time)")


if __name__ == "__main__":
    main()
