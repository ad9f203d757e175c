"""Tight style sets: groups of images whose style features all sit close to the group's centre and to each other.

Union-find at a threshold chains: a poster joins a gradient that joins a grey photo that joins a face, and the
largest component is a mix no person would call one style. A tight set instead is grown from a seed image's
neighbours (cosine >= `threshold`) and pruned until every member is within `threshold` of the set's centre
(the normalised mean feature) and within `pair_min` of every other member; members the pruning drops stay
free for other sets. Sets are chosen greedily, the best first (the most members, then the highest mean
cosine to the centre), their members removed, until no set of `min_set` remains or `max_sets` are chosen.
Memory: the (n, n) cosine matrix of one style bucket (n about `style.bucket_images`, 2048 by default: 16 MiB).
"""

from __future__ import annotations

import numpy as np


def centre(x: np.ndarray) -> np.ndarray:
    c = x.mean(0)
    return c / (np.linalg.norm(c) + 1e-8)


def prune(x: np.ndarray, sims: np.ndarray, members: np.ndarray, threshold: float, pair_min: float) -> np.ndarray:
    """Drop the worst member (lowest of: cosine to the centre - threshold, least pairwise cosine - pair_min)
    until every member passes both; the members left, sorted."""
    m = np.asarray(members, np.int64)
    while len(m) > 1:
        to_c = x[m] @ centre(x[m])
        sub = sims[np.ix_(m, m)]
        least = np.where(np.eye(len(m), dtype=bool), np.inf, sub).min(1)
        slack = np.minimum(to_c - threshold, least - pair_min)
        worst = int(np.argmin(slack))
        if slack[worst] >= 0:
            break
        m = np.delete(m, worst)
    return np.sort(m)


def tightness(x: np.ndarray, members: np.ndarray) -> float:
    """Mean cosine of the members to their centre."""
    return float((x[members] @ centre(x[members])).mean()) if len(members) else 0.0


def tight_sets(x: np.ndarray, threshold: float, pair_min: float, min_set: int, max_sets: int) -> list[np.ndarray]:
    """Disjoint tight sets over the rows of x (unit-norm), best first; each a sorted index array."""
    n = len(x)
    if n < min_set or n < 2:
        return []
    sims = x @ x.T
    free = np.ones(n, bool)
    out: list[np.ndarray] = []
    while len(out) < max_sets:
        best, key = None, None
        tried: set[tuple[int, ...]] = set()
        for i in np.flatnonzero(free):
            cand = np.flatnonzero(free & (sims[i] >= threshold))
            if len(cand) < min_set or tuple(cand) in tried:
                continue
            tried.add(tuple(cand))
            m = prune(x, sims, cand, threshold, pair_min)
            if len(m) < min_set:
                continue
            k = (len(m), tightness(x, m))
            if key is None or k > key:
                best, key = m, k
        if best is None:
            break
        out.append(best)
        free[best] = False
    return out


def set_stats(x: np.ndarray, members: np.ndarray) -> dict[str, float]:
    """Least cosine of a member to the centre and least pairwise cosine (1.0 for one member)."""
    if len(members) < 2:
        return {"least_to_centre": 1.0, "least_pair": 1.0}
    sub = x[members] @ x[members].T
    return {"least_to_centre": float((x[members] @ centre(x[members])).min()),
            "least_pair": float(sub[np.triu_indices(len(members), 1)].min())}
