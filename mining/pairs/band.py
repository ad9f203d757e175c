"""Band union-find inside one cluster (ACE §3.1).

Exact cosine similarity in blocks keeps the edges with lo <= s <= hi (with their scores); s > hi counts
as a duplicate, never an edge. Union-find turns the edges into disjoint sets. Because union-find chains,
a set can hold pairs whose own similarity is outside the band, so every emitted pair is re-checked, and
pairs per set are capped by a seeded sample. Memory is O(n*d + block^2), never n^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BandEdges:
    i: np.ndarray  # (m,) int64, i < j, local row indices
    j: np.ndarray  # (m,) int64
    score: np.ndarray  # (m,) float32
    duplicates: int  # pairs with s > hi

    def __len__(self) -> int:
        return len(self.i)


def _block_sims(x: np.ndarray, a: int, b: int, c: int, d: int, device: str | None):
    if device is None:
        return x[a:b] @ x[c:d].T
    return (x[a:b] @ x[c:d].T).float().cpu().numpy()  # x: a torch tensor on the device, fp16/bf16


def band_edges(x: np.ndarray, lo: float, hi: float, block: int = 4096, device: str | None = None,
               dtype: str = "bf16") -> BandEdges:
    """Edges of the band graph over the rows of x (unit-norm). device=None: fp32 numpy; 'cuda': torch."""
    if not 0 <= lo <= hi:
        raise ValueError(f"need 0 <= lo <= hi, got lo={lo}, hi={hi}")
    n = len(x)
    src = np.ascontiguousarray(x, dtype=np.float32)
    if device is not None:
        import torch

        src = torch.from_numpy(src).to(device, torch.bfloat16 if dtype == "bf16" else torch.float16)
    ii, jj, ss = [], [], []
    dups = 0
    for a in range(0, n, block):
        b = min(a + block, n)
        for c in range(a, n, block):
            d = min(c + block, n)
            s = _block_sims(src, a, b, c, d, device)
            flat = np.flatnonzero(s >= lo)  # most pairs fail this one comparison
            r, q = np.divmod(flat, d - c)
            if a == c:  # diagonal block: strict upper triangle only
                keep = q > r
                r, q, flat = r[keep], q[keep], flat[keep]
            vals = s.reshape(-1)[flat]
            over = vals > hi
            dups += int(np.count_nonzero(over))
            ii.append(r[~over] + a)
            jj.append(q[~over] + c)
            ss.append(vals[~over])
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    return BandEdges(cat(ii, np.int64), cat(jj, np.int64), cat(ss, np.float32), dups)


def band_edges_rows(load, n: int, lo: float, hi: float, block: int = 4096, row_block: int | None = None,
                    first_new: int = 0) -> BandEdges:
    """`band_edges` over n rows read `row_block` rows at a time (`load(a, b)` gives unit rows [a, b)), keeping
    the pairs (i < j) with j >= first_new only (0: every pair). With first_new = 0 the edges, their scores
    and their order equal `band_edges` over all n rows: the same `block` x `block` products are computed
    (row_block is rounded down to a multiple of block), and the edges are sorted into its order. Memory: two
    row blocks and one similarity block."""
    if not 0 <= lo <= hi:
        raise ValueError(f"need 0 <= lo <= hi, got lo={lo}, hi={hi}")
    rb = n if row_block is None or row_block >= n else max(block, row_block // block * block)
    ii, jj, ss = [], [], []
    dups = 0
    for a0 in range(0, n, max(rb, 1)):
        a1 = min(a0 + rb, n)
        xa = np.ascontiguousarray(load(a0, a1), dtype=np.float32)
        for c0 in range(a0, n, max(rb, 1)):
            c1 = min(c0 + rb, n)
            if c1 <= first_new:
                continue
            xc = xa if c0 == a0 else np.ascontiguousarray(load(c0, c1), dtype=np.float32)
            for a in range(a0, a1, block):
                b = min(a + block, n)
                for c in range(max(a, c0), c1, block) if c0 == a0 else range(c0, c1, block):
                    d = min(c + block, n)
                    if d <= first_new:
                        continue
                    s = xa[a - a0:b - a0] @ xc[c - c0:d - c0].T
                    flat = np.flatnonzero(s >= lo)
                    r, q = np.divmod(flat, d - c)
                    keep = (q > r) if a == c else np.ones(len(r), bool)
                    keep &= q + c >= first_new
                    r, q, flat = r[keep], q[keep], flat[keep]
                    vals = s.reshape(-1)[flat]
                    over = vals > hi
                    dups += int(np.count_nonzero(over))
                    ii.append(r[~over] + a)
                    jj.append(q[~over] + c)
                    ss.append(vals[~over])
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    i, j, sc = cat(ii, np.int64), cat(jj, np.int64), cat(ss, np.float32)
    order = np.lexsort((j, i, j // block, i // block))  # band_edges' order: block pair, then row-major
    return BandEdges(i[order], j[order], sc[order], dups)


class UnionFind:
    """Disjoint sets with path compression and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # compress the path behind us
            parent[a], a = root, parent[a]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def labels(self) -> np.ndarray:
        return np.array([self.find(a) for a in range(len(self.parent))], dtype=np.int64)


def disjoint_sets(n: int, edges: BandEdges) -> list[np.ndarray]:
    """Sets of two or more rows, each sorted, ordered by their smallest row."""
    uf = UnionFind(n)
    for a, b in zip(edges.i.tolist(), edges.j.tolist()):
        uf.union(a, b)
    lab = uf.labels()
    order = np.argsort(lab, kind="stable")
    bounds = np.flatnonzero(np.diff(lab[order])) + 1
    sets = [np.sort(g) for g in np.split(order, bounds) if len(g) > 1]
    return sorted(sets, key=lambda g: int(g[0]))


@dataclass
class SetPairs:
    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    out_of_band: int  # pairs of a set whose own similarity left the band (chaining)
    capped: int  # in-band pairs dropped by the per-set cap


def pairs_from_sets(x: np.ndarray, sets: list[np.ndarray], lo: float, hi: float, max_pairs_per_set: int,
                    seed: int, first_new: int = 0) -> SetPairs:
    """Every in-band pair of every set, capped per set by a sample seeded from (seed, set's first row).
    first_new > 0: only the pairs holding a row >= first_new count (a delta: the others were mined before)."""
    ii, jj, ss = [], [], []
    oob = capped = 0
    for members in sets:
        e = band_edges(x[members], lo, hi)  # blocked: a large set never makes a set-size-squared matrix
        r, q, vals = e.i, e.j, e.score
        old = int(np.count_nonzero(members < first_new))
        if old:
            touch = members[q] >= first_new  # members are sorted: j > i, so a new row is j
            r, q, vals = r[touch], q[touch], vals[touch]
        oob += len(members) * (len(members) - 1) // 2 - old * (old - 1) // 2 - len(vals)
        if len(vals) > max_pairs_per_set:
            rng = np.random.default_rng([seed, int(members[0])])
            pick = np.sort(rng.choice(len(vals), max_pairs_per_set, replace=False))
            capped += len(vals) - len(pick)
            r, q, vals = r[pick], q[pick], vals[pick]
        ii.append(members[r])
        jj.append(members[q])
        ss.append(vals)
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    return SetPairs(cat(ii, np.int64), cat(jj, np.int64), cat(ss, np.float32), oob, capped)
