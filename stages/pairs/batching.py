"""Mining batches cut by rows, per generation of the clustering's rows.

A batch is (generation g, cluster range [c0, c1)). Generation 0 (the rows of the K-means fit) is cut into
batches of consecutive clusters holding at most `batch_rows` rows and `clusters_per_batch` clusters; a
cluster over `batch_rows` is a batch of its own, mined in row blocks. A generation g >= 1 (rows a growth
assigned to the existing centroids) is a delta: its batches hold the clusters that gained rows in g, cut
by the rows each reads (the cluster's rows of generations <= g), and mine the edges touching a row of g.
A batch's content depends only on generations <= its own, so a growth adds batches and changes none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.arrow import to_table
from schemas.layout import PairFiles
from schemas.records import PairRecord
from store import storage


@dataclass(frozen=True)
class Batch:
    generation: int  # 0: the fit's rows; g >= 1: a delta over the rows growth g added
    c0: int
    c1: int  # clusters [c0, c1); a delta skips those without rows of its generation


def plan_batches(counts: np.ndarray, batch_rows: int, clusters_per_batch: int) -> list[Batch]:
    """The batches of a clustering whose generation g holds counts[g, c] rows of cluster c (G x k)."""
    out: list[Batch] = []
    for g in range(len(counts)):
        reads = counts[: g + 1].sum(axis=0)  # rows a cluster's work in generation g reads
        clusters = range(counts.shape[1]) if g == 0 else np.flatnonzero(counts[g]).tolist()
        start, last, rows, n = None, None, 0, 0
        for c in clusters:
            if start is not None and (rows + reads[c] > batch_rows or n == clusters_per_batch):
                out.append(Batch(g, start, last + 1))
                start, rows, n = None, 0, 0
            if start is None:
                start = c
            last, rows, n = c, rows + int(reads[c]), n + 1
        if start is not None:
            out.append(Batch(g, start, last + 1))
    return out


@dataclass
class ClusterSlice:
    """One cluster's rows in a batch: layout rows [lo, hi); local rows >= first_new are its generation's."""
    cluster: int
    lo: int
    hi: int
    first_new: int


def batch_slices(b: Batch, offsets: np.ndarray, counts: np.ndarray) -> list[ClusterSlice]:
    """The layout rows each cluster of batch `b` reads (its rows of generations <= b.generation)."""
    out = []
    for c in range(b.c0, b.c1):
        if b.generation and not counts[b.generation, c]:
            continue
        before = int(counts[: b.generation, c].sum())
        lo = int(offsets[c])
        out.append(ClusterSlice(c, lo, lo + before + int(counts[b.generation, c]), before))
    return out


class LayoutRows:
    """Unit float32 rows [lo, hi) of the by-cluster layout, read on demand (never all at once): `rows(a, b)`
    a range, `x[idx]` any rows (read `chunk` rows at a time), `view(a, b)` a sub-range."""

    def __init__(self, uri: str, lo: int, hi: int, chunk: int):
        self.uri, self.lo, self.hi, self.chunk = uri, lo, hi, max(1, chunk)

    def __len__(self) -> int:
        return self.hi - self.lo

    def rows(self, a: int, b: int) -> np.ndarray:
        from stages.corpus.cluster import layout_rows
        from stages.corpus.embed import normalise_rows

        return normalise_rows(layout_rows(self.uri, "vectors", self.lo + a, self.lo + b))

    def view(self, a: int, b: int) -> LayoutRows:
        return LayoutRows(self.uri, self.lo + a, self.lo + b, self.chunk)

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        uniq, inv = np.unique(idx, return_inverse=True)
        if not len(uniq):
            return np.zeros((0, self.rows(0, min(1, len(self))).shape[1] if len(self) else 0), np.float32)
        parts = []
        for a in range(int(uniq[0]), int(uniq[-1]) + 1, self.chunk):
            sel = uniq[(uniq >= a) & (uniq < a + self.chunk)]
            if len(sel):
                parts.append(self.rows(a, int(sel[-1]) + 1)[sel - a])
        return np.concatenate(parts)[inv.reshape(-1)].reshape(*idx.shape, -1)


def read_ids(uri: str, lo: int, hi: int) -> list[str]:
    from stages.corpus.cluster import layout_rows

    return [b.decode() for b in layout_rows(uri, "ids", lo, hi)]


def runs(slices: list[ClusterSlice]) -> list[tuple[int, int]]:
    """The slices' layout rows as few contiguous ranges (a batch of whole clusters: one)."""
    out: list[list[int]] = []
    for s in slices:
        if s.hi == s.lo:
            continue
        if out and out[-1][1] == s.lo:
            out[-1][1] = s.hi
        else:
            out.append([s.lo, s.hi])
    return [(a, b) for a, b in out]


def read_slices(uri: str, slices: list[ClusterSlice]) -> tuple[list[str], np.ndarray]:
    """(ids, unit float32 rows) of the slices, in order."""
    parts = runs(slices)
    ids = [i for a, b in parts for i in read_ids(uri, a, b)]
    x = [LayoutRows(uri, a, b, b - a).rows(0, b - a) for a, b in parts]
    return ids, (np.concatenate(x) if x else np.zeros((0, 0), np.float32))


def write_tables(out: str, tables: dict[str, dict[str, list]], pairs: list[PairRecord]) -> None:
    for name, cols in (("edges", ("cluster", "source_id", "target_id", "score")), ("sets", ("cluster", "set_id", "id")),
                       ("groups", ("cluster", "set_id", "input_ids", "target_id"))):
        for col in cols:
            tables[name].setdefault(col, [])
    edges = tables["edges"]
    storage.atomic_write_parquet(PairFiles(out).table("edges"), pa.table(
        {**edges, "score": pa.array(edges["score"], pa.float32())},
        schema=pa.schema([("cluster", pa.int64()), ("source_id", pa.string()), ("target_id", pa.string()),
                          ("score", pa.float32())])))
    storage.atomic_write_parquet(PairFiles(out).table("sets"), pa.table(
        tables["sets"], schema=pa.schema([("cluster", pa.int64()), ("set_id", pa.int64()), ("id", pa.string())])))
    storage.atomic_write_parquet(PairFiles(out).table("groups"), pa.table(
        tables["groups"], schema=pa.schema([("cluster", pa.int64()), ("set_id", pa.int64()),
                                            ("input_ids", pa.list_(pa.string())), ("target_id", pa.string())])))
    storage.atomic_write_parquet(PairFiles(out).pairs, to_table(pairs, PairRecord))


def file_digest(path: Path) -> str | None:
    """sha256 of a local file (a retrained classifier under the same name is another classifier)."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
