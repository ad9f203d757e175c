"""Our spherical K-means against raw faiss on the same data.

    python bench/kmeans.py [--n 100000] [--d 768] [--k 500] [--rounds 3]

baseline  - faiss.Kmeans(spherical, max_points_per_centroid=256).train + index.search for all points
aceforge  - mining.pairs.kmeans.spherical_kmeans: the same training, batched assignment, size-cap check
The sides run interleaved for --rounds rounds; the ratio is of the best runs (bench/_timing.py).
Target from the clustering issue: <= 1.1x raw faiss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import interleave, ratio, report  # noqa: E402
from mining.pairs.kmeans import spherical_kmeans  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.k, args.d), dtype=np.float32)
    x = centres[rng.integers(0, args.k, args.n)] + rng.standard_normal((args.n, args.d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    def raw_faiss():
        km = faiss.Kmeans(args.d, args.k, niter=args.niter, spherical=True, seed=0, max_points_per_centroid=256,
                          min_points_per_centroid=1)
        km.train(x)
        return km.index.search(x, 1)[1]

    t = interleave([("baseline", raw_faiss), ("aceforge", lambda: spherical_kmeans(x, args.k, seed=0,
                                                                                    niter=args.niter))],
                   rounds=args.rounds)
    agree = float((t["aceforge"].result.assignments == t["baseline"].result[:, 0]).mean())
    print(f"n={args.n} d={args.d} k={args.k} niter={args.niter}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads; {args.rounds} interleaved rounds")
    print("\n".join(report(t, "baseline", width=28, labels={"baseline": "raw faiss train + search",
                                                             "aceforge": "aceforge spherical_kmeans"})))
    print(f"ratio {ratio(t, 'aceforge', 'baseline'):.2f}x, of bests (target <= 1.1x); "
          f"same assignments for {agree:.1%} of points")


if __name__ == "__main__":
    main()
