"""The by-cluster layout as units (the stage kmeans): one unit per range of consecutive clusters holding at
most `mining.layout_rows` rows, each writing its slice of the vectors and ids (layout-<key>/vectors-NNNNN.npy,
ids-NNNNN.npy) and its clusters' digests and generation counts, from kmeans-assign's final labels; the
finalize writes offsets.npy, the digests and the marker. Readers: stages/corpus/cluster.py (layout_rows)."""

from __future__ import annotations

import io

import numpy as np

from runtime.stage import ItemReport, StageReport
from schemas.layout import ClusterFiles
from stages.corpus.kmeans_units import KMeansAssignStage, KMeansFitStage, _ClusterStage
from store import storage


def cluster_ranges(counts: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Consecutive cluster ranges [c0, c1) of at most `rows` rows (a larger cluster alone): layout units."""
    out, c0, n = [], 0, 0
    for c, m in enumerate(counts.tolist()):
        if c > c0 and n + m > rows:
            out.append((c0, c))
            c0, n = c, 0
        n += m
    return out + [(c0, len(counts))]


def write_range(emb_uri: str, out: str, key: str, r: int, c0: int, c1: int, counts: np.ndarray,
                generations: list[int]) -> int:
    """One layout unit: the vectors and ids of clusters [c0, c1), grouped by cluster in embedding order, and
    their per-cluster digests and generation counts; reads every partition's final labels, and the vectors
    of the partitions holding some of its rows. Returns its rows."""
    from stages.corpus.cluster import _NpySink, _id64, _read_npy
    from stages.corpus.embed import iter_partitions, partition_sizes

    files = ClusterFiles(out)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    lo, hi, kk = int(offsets[c0]), int(offsets[c1]), c1 - c0
    nxt = offsets[c0:c1] - lo
    digest = np.zeros(kk, np.uint64)
    gen_counts = np.zeros((len(generations), kk), np.int64)
    gen_digest = np.zeros((len(generations), kk), np.uint64)
    d = storage.read_marker(emb_uri)["dim"]
    vec = _NpySink(files.range_file(key, "vectors", r), (hi - lo, d), np.float16)
    ids_out = _NpySink(files.range_file(key, "ids", r), (hi - lo,), "S64")
    pos = 0
    for p, size in enumerate(partition_sizes(emb_uri)):
        lab = _read_npy(files.final_part(key, p))
        sel = np.flatnonzero((lab >= c0) & (lab < c1))
        if len(sel):
            ids, x = next(iter_partitions(emb_uri, start=p))
            if max(map(len, ids), default=0) > 64:
                raise ValueError(f"{emb_uri}: ids longer than 64 characters (catalog ids are sha256 hex)")
            local = lab[sel] - c0
            order = np.argsort(local, kind="stable")
            sl = local[order]
            dest = nxt[sl] + (np.arange(len(sl)) - np.searchsorted(sl, sl, side="left"))
            vec.array[dest] = x[sel][order].astype(np.float16)
            ids_out.array[dest] = np.asarray(ids, dtype="S64")[sel][order]
            h = np.array([_id64(ids[i]) for i in sel], np.uint64)
            np.add.at(digest, local, h)
            gen = np.searchsorted(generations, pos + sel, side="right")
            np.add.at(gen_counts, (gen, local), 1)
            np.add.at(gen_digest, (gen, local), h)
            np.add.at(nxt, sl, 1)
        pos += size
    if not np.array_equal(nxt, offsets[c0 + 1:c1 + 1] - lo):
        raise RuntimeError(f"{out}: clusters {c0}-{c1} of the layout do not account for every row")
    vec.commit()
    ids_out.commit()
    buf = io.BytesIO()
    np.savez(buf, digest=digest, gen_counts=gen_counts, gen_digest=gen_digest)
    storage.atomic_write_bytes(files.range_file(key, "sums", r), buf.getvalue())
    return hi - lo


def cluster_stages(cfg) -> list:
    """The K-means stages in order (kmeans-fit, kmeans-assign, kmeans), for running them by hand."""
    return [KMeansFitStage(cfg), KMeansAssignStage(cfg), KMeansStage(cfg)]


class KMeansStage(_ClusterStage):
    """<root>/clusters/<embedder>/: the by-cluster layout, one unit per cluster range of at most
    `mining.layout_rows` rows, from kmeans-assign's final labels (stages/corpus/kmeans_units.py); the
    marker (k, epoch, policy, ...) once every range is written."""

    name, key, item_name = "kmeans", "clusters", "range"
    needs = ("kmeans-assign",)

    @property
    def out(self) -> str:
        return self.clusters

    def inputs(self) -> list[str]:
        return [ClusterFiles(self.clusters).labels]

    def _state(self) -> tuple[dict, np.ndarray, list[tuple[int, int]]]:
        from stages.corpus.cluster import _read_npy

        if getattr(self, "_layout_state", None) is None:
            m = storage.read_marker(ClusterFiles(self.clusters).labels)
            counts = _read_npy(ClusterFiles(self.clusters).final_counts(m["key"]))
            self._layout_state = m, counts, cluster_ranges(counts, self.cfg.mining.layout_rows)
        return self._layout_state

    def plan(self) -> int:
        return len(self._state()[2])

    def item_outputs(self, k: int) -> list[str]:
        return [ClusterFiles(self.clusters).range_file(self._state()[0]["key"], "sums", k)]

    def run(self, k: int) -> ItemReport:
        m, counts, ranges = self._state()
        rows = write_range(self.emb_uri, self.clusters, m["key"], k, *ranges[k], counts, m["generations"])
        return ItemReport(stage=self.label, item=k, counts={"rows": rows})

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def finalize(self, n: int) -> StageReport:
        from stages.corpus.cluster import _read_bytes, _write_npy

        m, counts, ranges = self._state()
        if n != len(ranges):
            raise RuntimeError(f"{self.label}: {n} items ran, the layout has {len(ranges)} cluster ranges")
        files, key = ClusterFiles(self.out), m["key"]
        sums = [np.load(io.BytesIO(_read_bytes(files.range_file(key, "sums", r)))) for r in range(n)]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if int(offsets[-1]) != m["points"]:
            raise RuntimeError(f"{self.out}: {offsets[-1]} rows laid out, {m['points']} clustered")
        _write_npy(files.ranges(key), offsets[[c0 for c0, _ in ranges] + [len(counts)]])
        _write_npy(files.offsets, offsets)
        _write_npy(files.digest, np.concatenate([s["digest"] for s in sums]))
        _write_npy(files.generation_counts, np.concatenate([s["gen_counts"] for s in sums], axis=1))
        _write_npy(files.generation_digests, np.concatenate([s["gen_digest"] for s in sums], axis=1))
        storage.write_marker(self.out, {
            "k": m["k"], "requested_k": m["requested_k"], "points": m["points"], "largest": int(counts.max()),
            "empty": int((counts == 0).sum()), "splits": m["splits"], "seed": self.cfg.mining.seed,
            "epoch": m["epoch"], "policy": m["policy"], "layout": key})
        self._remove_stale(m)
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def _remove_stale(self, m: dict) -> None:
        """What earlier clusterings of this folder wrote: other epochs' labels, other layouts, the one-unit
        layout files."""
        files = ClusterFiles(self.out)
        keep = {f"e{m['epoch']:04d}", f"final-{m['key']}", f"layout-{m['key']}"}
        for parent, pattern in ((files.labels, files.LABELS_DIR), (self.out, files.LAYOUT_DIR)):
            fs, path = storage.fs_path(parent)
            for p in fs.ls(path, detail=False) if fs.exists(path) else []:
                name = p.rstrip("/").rsplit("/", 1)[-1]
                if pattern.fullmatch(name) and name not in keep:
                    fs.rm(p, recursive=True)
        for uri in (files.vectors, files.ids):
            if storage.exists(uri):
                fs, path = storage.fs_path(uri)
                fs.rm(path)

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        return None if m is None else StageReport(stage=self.label, items=len(self._state()[2]),
                                                  outputs=[self.out],
                                                  counts={k: v for k, v in m.items() if k != "stage_version"})
