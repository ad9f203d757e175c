"""Band mining against a bare blocked matmul over the same matrix, on the same BLAS.

    python bench/band_mining.py [--n 50000] [--d 768] [--block 4096] [--rounds 3]

Each run is a fresh process (so its peak RSS is its own), the sides interleaved (baseline, aceforge, baseline,
...) for --rounds rounds; the time ratio is the ratio of the sides' best runs (bench/_timing.py):
  baseline  - for every upper-triangle block pair: S = X[a:b] @ X[c:d].T, nothing else
  aceforge  - mining.pairs.band.band_edges (same blocks, band filter, duplicate count, edges with scores),
              then union-find and the per-set re-checked pairs
Data: unit vectors with planted groups (so there are edges and sets), float32.
Targets from the clustering issue: time <= 1.3x the baseline, peak RSS <= 3x the matrix + 512 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._timing import Measured, interleave, ratio, report  # noqa: E402


def data(n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    n_grouped = n // 5  # a fifth of the points sit in groups of 5 around shared centres
    centres = np.repeat(rng.standard_normal((n_grouped // 5, d), dtype=np.float32), 5, axis=0)
    x[:n_grouped] = centres + 0.25 * rng.standard_normal((n_grouped, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run_side(side: str, n: int, d: int, block: int) -> dict:
    x = data(n, d)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out: dict = {}
    if side == "baseline":
        acc = 0.0
        for a in range(0, n, block):
            for c in range(a, n, block):
                s = x[a : a + block] @ x[c : c + block].T
                acc += float(s[0, 0])
        out["checksum"] = acc
    else:
        from mining.pairs.band import band_edges, disjoint_sets, pairs_from_sets

        e = band_edges(x, 0.85, 0.98, block=block)
        sets = disjoint_sets(n, e)
        p = pairs_from_sets(x, sets, 0.85, 0.98, max_pairs_per_set=64, seed=0)
        out.update(edges=len(e), duplicates=e.duplicates, sets=len(sets), pairs=int(len(p.i)))
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_before_mb"] = rss0 / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    ap.add_argument("--side", choices=["baseline", "aceforge"])
    args = ap.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.n, args.d, args.block)))
        return

    def side(name: str):
        cmd = [sys.executable, __file__, "--side", name, "--n", str(args.n), "--d", str(args.d),
               "--block", str(args.block)]

        def run() -> Measured:
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            out["peak_rss_mb_max"] = max(out["peak_rss_mb"], peaks.get(name, 0.0))
            peaks[name] = out["peak_rss_mb_max"]
            return Measured(out["seconds"], out)  # the child's own clock: process start-up not counted
        return name, run

    peaks: dict[str, float] = {}
    t = interleave([side("baseline"), side("aceforge")], rounds=args.rounds)
    matrix_mb = args.n * args.d * 4 / 2**20
    b, a = t["baseline"].result, t["aceforge"].result
    print(f"n={args.n} d={args.d} block={args.block}; matrix {matrix_mb:.0f} MiB (float32); "
          f"{args.rounds} interleaved rounds")
    print("\n".join(report(t, "baseline", width=26, labels={"baseline": "baseline blocked matmul",
                                                             "aceforge": "aceforge band mining"})))
    print(f"peak RSS (max over runs): baseline {b['peak_rss_mb_max']:.0f} MiB, aceforge {a['peak_rss_mb_max']:.0f} "
          f"MiB; edges {a['edges']}, duplicates {a['duplicates']}, sets {a['sets']}, pairs {a['pairs']}")
    print(f"time ratio {ratio(t, 'aceforge', 'baseline'):.2f}x, of bests (target <= 1.3x); peak RSS "
          f"{a['peak_rss_mb_max']:.0f} MiB vs budget 3 x matrix + 512 = {3 * matrix_mb + 512:.0f} MiB")


if __name__ == "__main__":
    main()
