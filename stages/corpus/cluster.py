"""Cluster embeddings: <root>/clusters/<embedder>/

    centroids.npy, fit.json, split_log.json   the fit (and how it was made)
    assignments.parquet                       id, cluster: one row per embedded image, in embedding order
    offsets.npy, vectors.npy, ids.npy         the vectors and ids sorted by cluster (stable): cluster c is
                                              rows offsets[c]:offsets[c+1]; a mining batch reads only its
                                              clusters' rows (byte ranges, no whole-matrix load)
    _SUCCESS.json                             counts, and the policy that produced them

The stage streams the embedding partitions: the fit looks at min(N, 256 k) rows (what faiss would
subsample anyway), assignment and the sorted layout go one partition at a time, and splitting an
oversized cluster gathers that cluster's rows only. Memory: the fit sample + one partition + N labels.

Incremental policy: when the embeddings grew, the new rows are assigned to the existing centroids (old rows
keep their clusters) unless (a) their mean cosine to their centroid is `recluster_drift` below the fit's,
or (b) the corpus has grown by `recluster_growth` since the fit, or (c) the K-means settings changed; then
everything is fitted again (a new epoch). Oversized clusters are split either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Callable

import numpy as np
import pyarrow as pa

from mining.pairs.kmeans import assign, fit_centroids, gpu_available, sample_size, split_oversized
from schemas.config import MiningConfig
from store import storage
from schemas.layout import ClusterFiles

ASSIGN_SCHEMA = pa.schema([("id", pa.string()), ("cluster", pa.int64())])


def default_k(n: int) -> int:
    return max(1, min(10_000, n // 50))


def _settings(cfg: MiningConfig) -> dict:
    return {"k": cfg.k, "seed": cfg.seed, "niter": cfg.kmeans_niter, "max_cluster_size": cfg.max_cluster_size}


def _gather(emb_uri: str, sizes: list[int], rows: np.ndarray) -> np.ndarray:
    """Vectors of the given sorted global rows, reading only the partitions that hold some."""
    from stages.corpus.embed import iter_partitions

    out = []
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for p, (_, x) in enumerate(iter_partitions(emb_uri)):
        sel = rows[(rows >= bounds[p]) & (rows < bounds[p + 1])] - bounds[p]
        if len(sel):
            out.append(x[sel])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _read_npy(uri: str) -> np.ndarray:
    fs, path = storage.fs_path(uri)
    with fs.open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def _write_npy(uri: str, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a)
    storage.atomic_write_bytes(uri, buf.getvalue())


class _NpySink:
    """A .npy array filled row range by row range through a local memory map, then moved to `uri`."""

    def __init__(self, uri: str, shape: tuple[int, ...], dtype):
        self.fs, self.path = storage.fs_path(uri)
        self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
        self.local = storage.is_local(self.fs)
        self.tmp = storage.tmp_name(self.path) if self.local else \
            os.path.join(tempfile.mkdtemp(prefix="aceforge-npy-"), "a.npy")
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=shape)

    def commit(self) -> None:
        self.array.flush()
        del self.array
        if self.local:
            storage.finalize(self.fs, self.tmp, self.path)
        else:
            remote_tmp = storage.tmp_name(self.path)
            self.fs.put_file(self.tmp, remote_tmp)
            storage.finalize(self.fs, remote_tmp, self.path)
            os.remove(self.tmp)


def read_rows(uri: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a .npy file, reading only their bytes (local or any fsspec URI)."""
    fs, path = storage.fs_path(uri)
    with fs.open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise ValueError(f"{uri}: Fortran-ordered arrays are not supported")
        row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        f.seek(f.tell() + start * row)
        data = f.read((stop - start) * row)
    return np.frombuffer(data, dtype).reshape((stop - start, *shape[1:]))


def cluster_stream(emb_uri: str, out: str, cfg: MiningConfig,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Cluster the complete embeddings at `emb_uri` into `out` (see the module doc); returns the marker."""
    from stages.corpus.embed import iter_partitions, partition_sizes

    say = progress or (lambda msg: None)
    sizes = partition_sizes(emb_uri)
    n = int(sum(sizes))
    if n == 0:
        raise ValueError(f"{emb_uri} holds no vectors: nothing to cluster")
    gpu = gpu_available()
    files = ClusterFiles(out)
    fit = json.loads(_read_bytes(files.fit)) if storage.exists(files.fit) else None
    labels = np.empty(n, np.int64)
    policy = "fit"
    if fit is not None and fit["settings"] == _settings(cfg) and fit["points"] <= n and \
            storage.exists(files.assignments):
        # old rows keep their clusters; new rows go to the nearest existing centroid
        centroids = _read_npy(files.centroids)
        old = storage.read_parquet(files.assignments)
        prev = min(old.num_rows, n)  # more rows clustered than embedded now: caught by the id check below
        labels[:prev] = old.column("cluster").to_numpy()[:prev]
        old_ids = old.column("id")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        cos_sum = 0.0
        same_rows = old.num_rows <= n
        for p, (ids, x) in enumerate(iter_partitions(emb_uri) if same_rows else []):
            lo, hi = int(bounds[p]), int(bounds[p + 1])
            if lo < prev and ids[: prev - lo] != old_ids.slice(lo, min(hi, prev) - lo).to_pylist():
                same_rows = False  # the embeddings were made again from another catalog: labels do not carry
                break
            if hi <= prev:
                continue
            x = x[max(prev - lo, 0):]
            lab = assign(x, centroids, gpu=gpu)
            cos_sum += float(np.einsum("ij,ij->i", x, centroids[lab]).sum())
            labels[max(prev, lo):hi] = lab
        new = n - prev
        new_cos = cos_sum / new if new else fit["mean_cos"]
        if not same_rows:
            policy = "refit: the embedded rows before the new ones are not those clustered before"
        elif new and new_cos < fit["mean_cos"] - cfg.recluster_drift:
            policy = f"refit: new rows' mean cosine {new_cos:.3f} < fit's {fit['mean_cos']:.3f} - {cfg.recluster_drift}"
        elif n > fit["points"] * (1 + cfg.recluster_growth):
            policy = f"refit: {n} rows > {fit['points']} at the fit x (1 + {cfg.recluster_growth})"
        else:
            policy = f"assigned {new} new rows to the existing {len(centroids)} centroids (mean cosine {new_cos:.3f})"
            epoch, k_req, log = fit["epoch"], fit["requested_k"], _read_log(out)
            gens = list(fit.get("generations") or [prev])
            gens += [n] if n > gens[-1] else []
            fit = {**fit, "generations": gens}
    elif fit is not None:
        policy = "refit: the K-means settings changed" if fit["settings"] != _settings(cfg) else "refit"
    say(policy)
    if policy.startswith("refit") or policy == "fit":
        k_req = cfg.k or default_k(n)
        m = sample_size(n, k_req)
        rows = np.arange(n) if m == n else np.sort(np.random.default_rng(cfg.seed).choice(n, m, replace=False))
        sample = _gather(emb_uri, sizes, rows)
        centroids = fit_centroids(sample, k_req, seed=cfg.seed, niter=cfg.kmeans_niter, gpu=gpu)
        del sample
        pos = 0
        cos_sum = 0.0
        for _, x in iter_partitions(emb_uri):
            lab = assign(x, centroids, gpu=gpu) if len(centroids) > 1 else np.zeros(len(x), np.int64)
            cos_sum += float(np.einsum("ij,ij->i", x, centroids[lab]).sum())
            labels[pos:pos + len(x)] = lab
            pos += len(x)
        epoch = (fit["epoch"] + 1) if fit else 0
        fit = {"settings": _settings(cfg), "points": n, "mean_cos": cos_sum / n, "epoch": epoch,
               "requested_k": k_req, "generations": [n]}
        log = []
    fit_uri = files.fit
    if storage.exists(fit_uri):  # from here on the files change: without fit.json a crash means a refit
        storage.fs_path(fit_uri)[0].rm(storage.fs_path(fit_uri)[1])
    centroids, more = split_oversized(labels, centroids, lambda r: _gather(emb_uri, sizes, r), seed=cfg.seed + len(log),
                                      niter=cfg.kmeans_niter, max_cluster_size=cfg.max_cluster_size, gpu=gpu)
    log += more
    _write_layout(emb_uri, out, labels, len(centroids), fit["generations"])
    _write_npy(files.centroids, centroids)
    storage.atomic_write_bytes(files.split_log, json.dumps(log, indent=1).encode())
    storage.atomic_write_bytes(fit_uri, json.dumps(fit, indent=1).encode())  # the fit's files are complete
    counts = np.bincount(labels, minlength=len(centroids))
    marker = {"k": int(len(centroids)), "requested_k": int(k_req), "points": n, "largest": int(counts.max()),
              "empty": int((counts == 0).sum()), "splits": len(log), "seed": cfg.seed, "epoch": epoch,
              "policy": policy}
    storage.write_marker(out, marker)
    return marker


def _read_bytes(uri: str) -> bytes:
    fs, path = storage.fs_path(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def _read_log(out: str) -> list[dict]:
    uri = ClusterFiles(out).split_log
    return json.loads(_read_bytes(uri)) if storage.exists(uri) else []


def _write_layout(emb_uri: str, out: str, labels: np.ndarray, k: int, generations: list[int]) -> None:
    """assignments.parquet in embedding order, and the by-cluster layout, streaming the partitions;
    `generations`: the cumulative row counts of the fit and of each growth since."""
    from stages.corpus.embed import iter_partitions

    counts = np.bincount(labels, minlength=k)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nxt = offsets[:-1].copy()
    digest = np.zeros(k, np.uint64)  # per cluster: an order-free sum of its ids' leading 64 bits
    gen_counts = np.zeros((len(generations), k), np.int64)
    gen_digest = np.zeros((len(generations), k), np.uint64)
    d = storage.read_marker(emb_uri)["dim"]
    files = ClusterFiles(out)
    vec = _NpySink(files.vectors, (len(labels), d), np.float16)
    ids_out = _NpySink(files.ids, (len(labels),), "S64")
    pos = 0
    with storage.ParquetSink(files.assignments, ASSIGN_SCHEMA) as asg:
        for ids, x in iter_partitions(emb_uri):
            lab = labels[pos:pos + len(ids)]
            asg.write(pa.table({"id": ids, "cluster": pa.array(lab, pa.int64())}, schema=ASSIGN_SCHEMA))
            order = np.argsort(lab, kind="stable")
            sl = lab[order]
            first = np.searchsorted(sl, sl, side="left")
            dest = nxt[sl] + (np.arange(len(sl)) - first)
            vec.array[dest] = x[order].astype(np.float16)
            if max(map(len, ids), default=0) > 64:
                raise ValueError(f"{emb_uri}: ids longer than 64 characters (catalog ids are sha256 hex)")
            ids_out.array[dest] = np.asarray(ids, dtype="S64")[order]
            h = np.array([_id64(i) for i in ids], np.uint64)
            np.add.at(digest, lab, h)
            gen = np.searchsorted(generations, pos + np.arange(len(ids)), side="right")
            np.add.at(gen_counts, (gen, lab), 1)
            np.add.at(gen_digest, (gen, lab), h)
            np.add.at(nxt, sl, 1)
            pos += len(ids)
    if not np.array_equal(nxt, offsets[1:]):
        raise RuntimeError(f"{out}: the by-cluster layout does not account for every row")
    vec.commit()
    ids_out.commit()
    _write_npy(files.offsets, offsets)
    _write_npy(files.digest, digest)
    _write_npy(files.generation_counts, gen_counts)
    _write_npy(files.generation_digests, gen_digest)


def _id64(i: str) -> int:
    try:
        return int(i[:16], 16)
    except ValueError:
        return int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big")


def cluster_digests(uri: str) -> np.ndarray | None:
    """Per cluster, a digest of its members' ids (None for a clustering written before it existed)."""
    d = ClusterFiles(uri).digest
    return _read_npy(d) if storage.exists(d) else None


def cluster_generations(uri: str) -> tuple[np.ndarray, np.ndarray]:
    """(counts, digests), each G x k: per generation of rows (the fit's, then each growth assigned to the
    existing centroids), each cluster's rows and their ids' digest. In the by-cluster layout generation g
    of cluster c is rows offsets[c] + counts[:g, c].sum() onwards. A clustering written before generations
    were kept is one generation."""
    files = ClusterFiles(uri)
    if storage.exists(files.generation_counts):
        return _read_npy(files.generation_counts), _read_npy(files.generation_digests)
    sizes = np.diff(cluster_offsets(uri))
    d = cluster_digests(uri)
    return sizes[None, :], (np.zeros(len(sizes), np.uint64) if d is None else d)[None, :]


def load_assignments(uri: str) -> dict[str, int]:
    if storage.read_marker(uri) is None:
        raise FileNotFoundError(f"no complete clustering under {uri}")
    t = storage.read_parquet(ClusterFiles(uri).assignments)
    return dict(zip(t.column("id").to_pylist(), t.column("cluster").to_pylist()))


def cluster_offsets(uri: str) -> np.ndarray:
    return _read_npy(ClusterFiles(uri).offsets)


def cluster_rows(uri: str, c0: int, c1: int, offsets: np.ndarray | None = None) \
        -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, float32 unit vectors, cluster per row) of clusters [c0, c1), grouped by cluster: only those
    rows are read."""
    from stages.corpus.embed import normalise_rows

    offsets = cluster_offsets(uri) if offsets is None else offsets
    lo, hi = int(offsets[c0]), int(offsets[c1])
    if hi == lo:
        return [], np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    ids = [b.decode() for b in layout_rows(uri, "ids", lo, hi)]
    x = normalise_rows(layout_rows(uri, "vectors", lo, hi))
    cluster_of = np.repeat(np.arange(c0, c1), np.diff(offsets[c0:c1 + 1]))
    return ids, x, cluster_of


def layout_rows(uri: str, kind: str, lo: int, hi: int) -> np.ndarray:
    """Rows [lo, hi) of the by-cluster layout's `kind` (vectors: float16, ids: S64), reading only their bytes
    from the cluster ranges' files that hold them."""
    files = ClusterFiles(uri)
    key = (storage.read_marker(uri) or {}).get("layout")
    if key is None:  # written by the one-unit clustering: one file per kind
        return read_rows(files.vectors if kind == "vectors" else files.ids, lo, hi)
    starts = _read_npy(files.ranges(key))
    first = max(0, int(np.searchsorted(starts, lo, side="right")) - 1)
    out = [read_rows(files.range_file(key, kind, first), 0, 0)]
    for r in range(first, len(starts) - 1):
        a, b = int(starts[r]), int(starts[r + 1])
        if a >= hi:
            break
        if min(hi, b) > max(lo, a):
            out.append(read_rows(files.range_file(key, kind, r), max(lo, a) - a, min(hi, b) - a))
    return np.concatenate(out)


from stages.corpus.cluster_layout import KMeansStage, cluster_stages  # noqa: E402,F401  (re-exported)
