"""Cluster embeddings: <root>/clusters/<embedder>/ centroids.npy, assignments.parquet (id, cluster),
split_log.json, then the marker."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa

from mining.kmeans import spherical_kmeans
from schemas.config import MiningConfig
from tasks import storage
from tasks.layout import RunLayout
from tasks.stage import Resources, SingleUnitStage, StageReport, UnitReport


def clusters_uri(root: str, emb_uri: str) -> str:
    """Clusters of the embeddings at `emb_uri` (named like its folder)."""
    return RunLayout(root).clusters(emb_uri.rstrip("/").rsplit("/", 1)[-1])


def default_k(n: int) -> int:
    return max(1, min(10_000, n // 50))


def cluster_embeddings(ids: list[str], x: np.ndarray, root: str, emb_uri: str, cfg: MiningConfig) -> str:
    out = clusters_uri(root, emb_uri)
    if storage.read_marker(out) is not None:
        return out
    if len(ids) == 0:
        raise ValueError(f"{emb_uri} holds no vectors: nothing to cluster")
    k = cfg.k or default_k(len(ids))
    res = spherical_kmeans(x, k, seed=cfg.seed, niter=cfg.kmeans_niter, max_cluster_size=cfg.max_cluster_size)
    buf = io.BytesIO()
    np.save(buf, res.centroids)
    storage.atomic_write_bytes(storage.join(out, "centroids.npy"), buf.getvalue())
    storage.atomic_write_parquet(storage.join(out, "assignments.parquet"),
                                 pa.table({"id": ids, "cluster": pa.array(res.assignments, pa.int64())}))
    storage.atomic_write_bytes(storage.join(out, "split_log.json"), json.dumps(res.split_log, indent=1).encode())
    sizes = res.sizes
    storage.write_marker(out, {"k": int(len(res.centroids)), "requested_k": k, "points": len(ids),
                               "largest": int(sizes.max()), "empty": int((sizes == 0).sum()),
                               "splits": len(res.split_log), "seed": cfg.seed})
    return out


def load_assignments(uri: str) -> dict[str, int]:
    if storage.read_marker(uri) is None:
        raise FileNotFoundError(f"no complete clustering under {uri}")
    t = storage.read_parquet(storage.join(uri, "assignments.parquet"))
    return dict(zip(t.column("id").to_pylist(), t.column("cluster").to_pylist()))


class KMeansStage(SingleUnitStage):
    """<root>/clusters/<embedder>/: spherical K-means over the complete embeddings (one unit)."""

    name = "kmeans"
    resources = Resources(cpus=1.0)

    @property
    def emb_uri(self) -> str:
        from mining.embedders import make_embedder

        return self.layout.embeddings(make_embedder(self.cfg.mining.embedder, self.cfg.models_dir).name)

    @property
    def out(self) -> str:
        return clusters_uri(self.cfg.root, self.emb_uri)

    def run(self, k: int) -> UnitReport:
        from tasks.embed import load_embeddings

        ids, x, _ = load_embeddings(self.emb_uri)
        cluster_embeddings(ids, x, self.cfg.root, self.emb_uri, self.cfg.mining)
        return UnitReport(stage=self.label, unit=k, counts={"points": len(ids)})

    def report(self) -> StageReport | None:
        m = storage.read_marker(self.out)
        return None if m is None else StageReport(stage=self.label, units=1, outputs=[self.out], counts=m)
