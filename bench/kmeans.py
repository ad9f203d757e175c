"""Our spherical K-means against raw faiss on the same data.

    python bench/kmeans.py [--n 100000] [--d 768] [--k 500]

baseline  - faiss.Kmeans(spherical, max_points_per_centroid=256).train + index.search for all points
aceforge  - mining.kmeans.spherical_kmeans: the same training, batched assignment, size-cap check
Target from the clustering issue: <= 1.1x raw faiss.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mining.kmeans import spherical_kmeans  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--niter", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.k, args.d), dtype=np.float32)
    x = centres[rng.integers(0, args.k, args.n)] + rng.standard_normal((args.n, args.d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    t0 = time.perf_counter()
    km = faiss.Kmeans(args.d, args.k, niter=args.niter, spherical=True, seed=0, max_points_per_centroid=256,
                      min_points_per_centroid=1)
    km.train(x)
    _, raw = km.index.search(x, 1)
    base = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = spherical_kmeans(x, args.k, seed=0, niter=args.niter)
    ours = time.perf_counter() - t0
    agree = float((res.assignments == raw[:, 0]).mean())
    print(f"n={args.n} d={args.d} k={args.k} niter={args.niter}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")
    print(f"{'raw faiss train + search':<28} {base:8.2f} s")
    print(f"{'aceforge spherical_kmeans':<28} {ours:8.2f} s   ratio {ours / base:.2f}x (target <= 1.1x); "
          f"same assignments for {agree:.1%} of points")


if __name__ == "__main__":
    main()
