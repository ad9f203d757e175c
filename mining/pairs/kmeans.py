"""Spherical K-means with faiss: train on at most 256 points per centroid, assign everything in batches,
split clusters over the size cap again until none is over. Seeded and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import faiss
import numpy as np


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32, unit norm
    assignments: np.ndarray  # (n,) int64 in [0, k)
    split_log: list[dict] = field(default_factory=list)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=len(self.centroids))


def gpu_available() -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _train(x: np.ndarray, k: int, seed: int, niter: int, max_points_per_centroid: int, gpu: bool) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], k, niter=niter, spherical=True, seed=seed, gpu=gpu, verbose=False,
                      max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1)
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, batch: int = 65536, gpu: bool = False) -> np.ndarray:
    """Nearest centroid by inner product, in batches (x is never copied whole)."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(centroids)
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), batch):
        _, lab = index.search(np.ascontiguousarray(x[i : i + batch], dtype=np.float32), 1)
        out[i : i + batch] = lab[:, 0]
    return out


def spherical_kmeans(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 20, max_points_per_centroid: int = 256,
                     max_cluster_size: int = 100_000, batch: int = 65536, gpu: bool | None = None) -> KMeansResult:
    """In memory: fit on `x`, assign it, split clusters over the cap. The K-means stage runs the same three
    steps over embedding partitions instead (fit on a sample, assign per partition, gather to split)."""
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need a non-empty (n, d) matrix, got shape {x.shape}")
    if k < 1 or max_cluster_size < 1:
        raise ValueError("k and max_cluster_size must be >= 1")
    gpu = gpu_available() if gpu is None else gpu
    x = np.ascontiguousarray(x, dtype=np.float32)
    first = fit_centroids(x, k, seed=seed, niter=niter, max_points_per_centroid=max_points_per_centroid, gpu=gpu)
    labels = assign(x, first, batch, gpu) if len(first) > 1 else np.zeros(len(x), np.int64)
    centroids, log = split_oversized(labels, first, lambda rows: x[rows], seed=seed, niter=niter,
                                     max_points_per_centroid=max_points_per_centroid,
                                     max_cluster_size=max_cluster_size, batch=batch, gpu=gpu)
    return KMeansResult(centroids, labels, log)


def fit_centroids(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 20, max_points_per_centroid: int = 256,
                  gpu: bool = False) -> np.ndarray:
    """k unit centroids fitted on x (at most k * max_points_per_centroid rows are used)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = min(k, len(x))
    return _train(x, k, seed, niter, max_points_per_centroid, gpu) if k > 1 else _mean_dir(x)[None, :]


def sample_size(n: int, k: int, max_points_per_centroid: int = 256) -> int:
    """Rows a fit of k centroids looks at (faiss subsamples beyond this)."""
    return min(n, max(1, k) * max_points_per_centroid)


def split_oversized(labels: np.ndarray, centroids: np.ndarray, gather, *, seed: int = 0, niter: int = 20,
                    max_points_per_centroid: int = 256, max_cluster_size: int = 100_000, batch: int = 65536,
                    gpu: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Split every cluster over `max_cluster_size` again until none is; `labels` is updated in place: an
    array, or an object with bincount(k), members(c) (sorted rows) and relabel(rows, labels) (labels kept
    in parts). `gather(rows)` returns the vectors of those rows: only one cluster's rows are held at a time."""
    k = len(centroids)
    cents = list(centroids)
    log: list[dict] = []
    parted = not isinstance(labels, np.ndarray)
    counts = labels.bincount(k) if parted else np.bincount(labels, minlength=k)
    queue = [int(c) for c in np.flatnonzero(counts > max_cluster_size)]
    while queue:
        c = queue.pop(0)
        members = labels.members(c) if parted else np.flatnonzero(labels == c)
        xm = np.ascontiguousarray(gather(members), dtype=np.float32)
        parts = math.ceil(2 * len(members) / max_cluster_size)
        sub_c = _train(xm, parts, seed + len(log) + 1, niter, max_points_per_centroid, gpu)
        sub = assign(xm, sub_c, batch, gpu)
        if np.bincount(sub, minlength=parts).max() == len(members):  # inseparable (e.g. identical points)
            sub = np.arange(len(members)) * parts // len(members)
            sub_c = np.stack([_mean_dir(xm[sub == p]) for p in range(parts)])
            how = "chunked"
        else:
            how = "kmeans"
        new_ids = [c] + list(range(len(cents), len(cents) + parts - 1))
        cents[c] = sub_c[0]
        cents.extend(sub_c[1:])
        if parted:
            labels.relabel(members, np.asarray(new_ids)[sub])
        else:
            labels[members] = np.asarray(new_ids)[sub]
        log.append({"cluster": int(c), "size": int(len(members)), "into": [int(i) for i in new_ids], "how": how})
        sub_sizes = np.bincount(sub, minlength=parts)
        queue += [i for i, n in zip(new_ids, sub_sizes) if n > max_cluster_size]
    return np.stack(cents).astype(np.float32), log


def _mean_dir(x: np.ndarray) -> np.ndarray:
    m = x.mean(axis=0)
    return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)
