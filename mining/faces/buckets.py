"""Face buckets and the candidate pairs inside one bucket.

Two photos of one person have unit dlib descriptors at cosine >= 0.9; a coarse quantiser (spherical K-means
over the descriptors less their mean, fitted on a sample) puts each face in its home bucket (the nearest
centroid) and, within `spill` cosine of it, in up to `max_extra` more: two faces near a boundary then share
a bucket. A pair whose faces share no bucket is not found (bench/face_buckets.py measures the recall: on
planted identities 0.63-0.71 with one bucket per face, 0.97 at spill 0.1 with two extra, at about two
buckets per face). A pair found in several buckets is kept by one unit only: `owner`, the lowest bucket
holding both faces. A face's buckets depend only on its descriptor and the kept quantiser, so new faces
change only the buckets they join.

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


def centred(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Unit rows of x - mean: descriptors share a large common direction (two people sit at cosine ~0.87), and
    centroids fitted on the raw vectors all lie near it, their cosines to a face a few thousandths apart."""
    v = np.asarray(x, np.float32) - mean
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit_quantiser(sample: np.ndarray, k: int, seed: int, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(the sample's mean descriptor, (k, d) unit centroids of spherical K-means over the centred sample);
    k == 1 (or too small a sample): a zero mean and one centroid, every face in bucket 0."""
    import faiss

    x = np.ascontiguousarray(sample, np.float32)
    d = x.shape[1] if x.ndim == 2 else 128
    if k <= 1 or len(x) <= k:
        return np.zeros(d, np.float32), np.zeros((1, d), np.float32)
    mean = x.mean(0).astype(np.float32)
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, max_points_per_centroid=1 << 30)
    km.train(centred(x, mean))
    return mean, np.asarray(km.centroids, np.float32)


def assign(x: np.ndarray, mean: np.ndarray, centroids: np.ndarray, spill: float = 0.0, max_extra: int = 2,
           block: int = 65536) -> tuple[np.ndarray, list[list[int]]]:
    """Each unit row's home bucket (the nearest centroid to the centred row; the lower index on a tie) and every
    bucket it is in: the home first, then up to `max_extra` others whose centroid is within `spill` cosine of
    the home's."""
    home = np.zeros(len(x), np.int32)
    if len(centroids) == 1:
        return home, [[0] for _ in range(len(x))]
    member: list[list[int]] = []
    for a in range(0, len(x), block):
        sims = centred(x[a:a + block], mean) @ centroids.T
        h = np.argmax(sims, axis=1)
        home[a:a + block] = h
        best = sims[np.arange(len(h)), h]
        order = np.argsort(-sims, axis=1, kind="stable")[:, 1:1 + max_extra]
        for r in range(len(h)):
            extra = [int(c) for c in order[r] if sims[r, c] >= best[r] - spill] if spill > 0 else []
            member.append([int(h[r])] + extra)
    return home, member


def owner(buckets_a: list[int], buckets_b: list[int]) -> int | None:
    """The one bucket that keeps a pair: the lowest bucket holding both faces (None: no bucket holds both)."""
    common = set(buckets_a) & set(buckets_b)
    return min(common) if common else None


class BucketSearch:
    """`search(x, lo, hi)` for mining/faces/pairs.py inside one bucket: exact (mining/pairs/band.py) up to
    `exact_max` rows; above, one faiss IVF index (L2, about sqrt(n) lists, `nprobe` searched) built and
    searched by range once, from every face down to cosine `floor`, both directions merged (a pair is kept
    when either face finds the other); each call then filters that edge list."""

    def __init__(self, floor: float, exact_max: int = 4096, nprobe: int = 16, seed: int = 0):
        self.floor, self.exact_max, self.nprobe, self.seed = floor, exact_max, nprobe, seed
        self._edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, x: np.ndarray, lo: float, hi: float) -> BandEdges:
        if len(x) <= self.exact_max:
            return band_edges(x, lo, hi)
        if lo < self.floor:
            raise ValueError(f"searched down to {self.floor}, asked for {lo}")
        if self._edges is None:
            self._edges = ivf_edges(x, self.floor, self.nprobe, self.seed)
        i, j, s = self._edges
        ok = s >= lo
        over = ok & (s > hi)
        keep = ok & ~over
        return BandEdges(i[keep], j[keep], s[keep], int(np.count_nonzero(over)))


def bucket_edges(x: np.ndarray, lo: float, hi: float, *, exact_max: int = 4096, nprobe: int = 16,
                 seed: int = 0) -> BandEdges:
    """Edges (i < j, lo <= s <= hi) among the unit rows of one bucket, pairs above hi counted as duplicates."""
    return BucketSearch(lo, exact_max, nprobe, seed)(x, lo, hi)


def ivf_edges(x: np.ndarray, floor: float, nprobe: int, seed: int,
              block: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, score) with i < j, sorted, of the pairs a faiss IVF range search finds at cosine >= floor."""
    import faiss

    n = len(x)
    src = np.ascontiguousarray(x, np.float32)
    nlist = max(1, min(int(math.sqrt(n)), n // 39))
    # L2 on unit vectors orders pairs as cosine does (|a - b|^2 = 2 - 2 cos), and unlike inner product its
    # coarse cells are not skewed by the descriptors' common direction (one cell held 18x the mean under IP)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(src.shape[1]), src.shape[1], nlist, faiss.METRIC_L2)
    cp = faiss.ClusteringParameters()
    cp.seed, cp.niter = seed, 10
    index.cp = cp
    index.train(src)
    index.add(src)
    index.nprobe = min(nprobe, nlist)
    radius = float(np.nextafter(np.float32(2 - 2 * floor), np.float32(3)))  # faiss keeps distances < radius
    keys, scores = [], []
    for a in range(0, n, block):
        lims, dist, idx = index.range_search(src[a:a + block], radius)
        q = np.repeat(np.arange(a, min(a + block, n), dtype=np.int64), np.diff(lims).astype(np.int64))
        j = idx.astype(np.int64)
        keep = q != j
        keys.append(np.minimum(q, j)[keep] * n + np.maximum(q, j)[keep])
        scores.append((1 - dist[keep] / 2).astype(np.float32))
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    key, first = np.unique(key, return_index=True)  # sorted (i, j); a pair found from both faces once
    score = score[first]
    ok = score >= floor
    i, j = np.divmod(key[ok], n)
    return i, j, score[ok]
