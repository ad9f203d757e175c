"""Face buckets and the candidate pairs inside one bucket.

Two photos of one person have unit dlib descriptors at cosine >= 0.9, so a coarse quantiser (spherical
K-means over the descriptors, fitted on a sample) puts them in one bucket unless their identity sits on a
boundary between two centroids. Every face goes to exactly one bucket (its nearest centroid): a pair is
found in at most one unit, and a pair whose two faces land in two buckets is not found at all (the recall
bench/face_buckets.py measures). A face's bucket depends only on its descriptor and the kept quantiser, so
new faces change only the buckets they join.

Inside a bucket the candidate pairs come from `bucket_edges`: the exact blocked search of mining/pairs/band.py
up to `exact_max` faces (the scores and order of the all-pairs code), above it a faiss IVF index searched
by range from every face (both directions merged: a pair is kept when either face finds the other).
"""

from __future__ import annotations

import math

import numpy as np

from mining.pairs.band import BandEdges, band_edges

QUANTISER = ("face-buckets-kmeans", "1")


def n_buckets(n_faces: int, bucket_faces: int) -> int:
    return max(1, math.ceil(n_faces / bucket_faces))


def fit_quantiser(sample: np.ndarray, k: int, seed: int, niter: int = 20) -> np.ndarray:
    """(k, d) unit centroids of spherical K-means over the unit rows of `sample` (k == 1: their mean)."""
    import faiss

    x = np.ascontiguousarray(sample, np.float32)
    if k <= 1 or len(x) <= k:
        c = x.mean(0, keepdims=True) if len(x) else np.zeros((1, x.shape[1] if x.ndim == 2 else 128), np.float32)
        return (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, max_points_per_centroid=1 << 30)
    km.train(x)
    return np.asarray(km.centroids, np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, block: int = 65536) -> np.ndarray:
    """The nearest centroid (highest cosine; the lower index on a tie) of each unit row: (n,) int32."""
    out = np.zeros(len(x), np.int32)
    if len(centroids) == 1:
        return out
    for a in range(0, len(x), block):
        out[a:a + block] = np.argmax(x[a:a + block] @ centroids.T, axis=1)
    return out


def bucket_edges(x: np.ndarray, lo: float, hi: float, *, exact_max: int = 4096, nprobe: int = 8,
                 seed: int = 0) -> BandEdges:
    """Edges (i < j, lo <= s <= hi) among the unit rows of one bucket, pairs above hi counted as duplicates.
    Exact up to `exact_max` rows; above, faiss IVF (about 4 sqrt(n) lists, `nprobe` searched) range search."""
    n = len(x)
    if n <= exact_max:
        return band_edges(x, lo, hi)
    import faiss

    src = np.ascontiguousarray(x, np.float32)
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    quant = faiss.IndexFlatIP(src.shape[1])
    index = faiss.IndexIVFFlat(quant, src.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    cp = faiss.ClusteringParameters()
    cp.seed = seed
    index.cp = cp
    index.train(src)
    index.add(src)
    index.nprobe = min(nprobe, nlist)
    radius = float(np.nextafter(np.float32(lo), np.float32(-1)))  # faiss keeps scores > radius: lo included
    keys, scores = [], []
    for a in range(0, n, 8192):
        lims, dist, idx = index.range_search(src[a:a + 8192], radius)
        q = np.repeat(np.arange(a, min(a + 8192, n), dtype=np.int64), np.diff(lims).astype(np.int64))
        j = idx.astype(np.int64)
        keep = q != j
        i_, j_ = np.minimum(q, j)[keep], np.maximum(q, j)[keep]
        keys.append(i_ * n + j_)
        scores.append(dist[keep].astype(np.float32))
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    key, first = np.unique(key, return_index=True)  # sorted (i, j); a pair found from both faces once
    score = score[first]
    ok = score >= lo
    key, score = key[ok], score[ok]
    over = score > hi
    i, j = np.divmod(key[~over], n)
    return BandEdges(i.astype(np.int64), j.astype(np.int64), score[~over], int(np.count_nonzero(over)))
