"""K-means as units (kmeans-fit, kmeans-assign per partition, kmeans per cluster range) against the one-unit
path (`cluster_stream`) on the same synthetic embeddings: seconds and peak RSS, side by side.

    python bench/kmeans_units.py [--n 200000] [--d 256] [--k 500] [--partition 4096] [--layout-rows 50000]

Every unit, every finalize and the one-unit path run in a fresh process (peak RSS = VmHWM, its own); the
labels of both sides are compared. The units' peak is bounded by a partition (assign), the fit sample
(fit), one cluster's rows (the split, in kmeans-assign's finalize) or a cluster range (layout); the one-unit
path holds 8 bytes of label per row besides.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.per_stage import _fresh, _rss_mb  # noqa: E402


def _warm() -> None:
    """What every side imports lazily, and the first faiss search and parquet read of a process (not timed:
    a worker pays them once for all its units)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    import stages.corpus.cluster  # noqa: F401
    import stages.corpus.embed  # noqa: F401
    from mining.pairs.kmeans import assign

    assign(np.eye(8, dtype=np.float32), np.eye(8, dtype=np.float32))
    buf = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), buf)
    pq.read_table(io.BytesIO(buf.getvalue()))


def _one_unit(emb: str, out: str, mining: dict) -> tuple[float, float]:
    from schemas.config import MiningConfig
    from stages.corpus.cluster import cluster_stream

    _warm()

    t0 = time.perf_counter()
    cluster_stream(emb, out, MiningConfig(**mining))
    return time.perf_counter() - t0, _rss_mb()


def _unit(spec: dict, k: int) -> tuple[float, float]:
    from runtime.stage import build

    stage = build(spec)
    _warm()
    t0 = time.perf_counter()
    stage.run(k)
    return time.perf_counter() - t0, _rss_mb()


def _finalize(spec: dict, n: int) -> tuple[float, float]:
    from runtime.stage import build

    stage = build(spec)
    _warm()
    t0 = time.perf_counter()
    stage.finalize(n)
    return time.perf_counter() - t0, _rss_mb()


def _embeddings(root: str, n: int, d: int, k: int, partition: int) -> str:
    from schemas.layout import RunLayout
    from stages.corpus.embed import finalize_embeddings, write_partition
    from store import storage

    out = RunLayout(root).embeddings("offline-dct-hist")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((k, d), dtype=np.float32)
    for p, lo in enumerate(range(0, n, partition)):
        m = min(partition, n - lo)
        x = centres[rng.integers(0, k, m)] + rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = [hashlib.sha256(str(lo + i).encode()).hexdigest() for i in range(m)]
        write_partition(storage.join(out, f"part-{p:05d}.parquet"), ids, x, "offline-dct-hist", "1", {}, m)
    finalize_embeddings(out, -(-n // partition), n, (0.8, 0.97))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--partition", type=int, default=4096)
    ap.add_argument("--layout-rows", type=int, default=50_000)
    args = ap.parse_args()
    from schemas.config import RunConfig
    from stages.corpus.cluster import cluster_stages, load_assignments

    root = tempfile.mkdtemp(prefix="aceforge-bench-kmeans-")
    emb = _embeddings(root, args.n, args.d, args.k, args.partition)
    mining = {"embedder": "offline", "k": args.k, "layout_rows": args.layout_rows}
    one_s, one_rss = _fresh(_one_unit, emb, f"{root}/one-unit", mining)
    print(f"n={args.n} d={args.d} k={args.k}, partitions of {args.partition}, layout ranges of "
          f"{args.layout_rows} rows; one process per unit")
    print(f"{'':<16}{'units':>6}{'seconds':>10}{'peak RSS/unit MB':>18}{'finalize s':>12}{'finalize MB':>12}")
    print(f"{'one unit':<16}{1:>6}{one_s:>10.1f}{one_rss:>18.0f}{'-':>12}{'-':>12}")
    cfg = RunConfig(root=root, mining=mining)
    total = 0.0
    for st in cluster_stages(cfg):
        n = st.plan()
        runs = [_fresh(_unit, st.spec(), k) for k in range(n)]
        fin_s, fin_rss = (0.0, 0.0) if st.name == "kmeans-fit" else _fresh(_finalize, st.spec(), n)
        secs = sum(s for s, _ in runs) + fin_s
        total += secs
        print(f"{st.name:<16}{n:>6}{secs:>10.1f}{max(r for _, r in runs):>18.0f}"
              + (f"{fin_s:>12.1f}{fin_rss:>12.0f}" if st.name != "kmeans-fit" else f"{'-':>12}{'-':>12}"))
    same = load_assignments(st.out) == load_assignments(f"{root}/one-unit")
    print(f"units total {total:.1f} s vs one unit {one_s:.1f} s; same labels: {same}")


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    main()
