"""K-means as units over the embedding partitions (the stages kmeans-fit, kmeans-assign, kmeans):

    kmeans-fit     one unit: the incremental policy (assign new rows to the existing centroids, or fit again:
                   stages/corpus/cluster.py) and, on a fit, K-means on a seeded sample of min(N, 256 k) rows;
                   writes fitting/plan.json and the centroids the assignment uses. Memory: the sample.
    kmeans-assign  one unit per embedding partition: its nearest-centroid labels, rows, ids digest and
                   cosine sum (labels/eNNNN/). Its finalize splits the oversized clusters (one cluster's
                   rows at a time, labels kept per partition in memory maps), then writes the final labels
                   per partition, the counts, centroids.npy, split_log.json, assignments.parquet (streamed)
                   and fit.json. Memory: one partition, or one cluster's rows.
    kmeans         one unit per cluster range (`mining.layout_rows` rows): its slice of the by-cluster
                   vectors and ids, read from every partition's final labels (stages/corpus/cluster.py).

The labels, counts, split and layout equal the one-unit `cluster_stream` for the same input.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa

from mining.pairs.kmeans import assign, fit_centroids, gpu_available, sample_size, split_oversized
from runtime.stage import ItemReport, Resources, SingleItemStage, Stage, StageReport
from schemas.config import MiningConfig
from schemas.layout import ClusterFiles
from store import storage


def layout_key(epoch: int, points: int) -> str:
    """Names the final labels and the layout of one clustering state (an epoch at a number of rows)."""
    return f"e{epoch:04d}-n{points}"


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _json(uri: str) -> dict:
    from stages.corpus.cluster import _read_bytes

    return json.loads(_read_bytes(uri))


def decide(emb_uri: str, out: str, cfg: MiningConfig, say=lambda msg: None) -> dict:
    """The kmeans-fit unit: the policy (as `cluster_stream` decides it), the centroids to assign with."""
    from stages.corpus.cluster import _gather, _read_npy, _read_log, _settings, _write_npy, default_k
    from stages.corpus.embed import iter_partitions, partition_sizes

    sizes = partition_sizes(emb_uri)
    n = int(sum(sizes))
    if n == 0:
        raise ValueError(f"{emb_uri} holds no vectors: nothing to cluster")
    gpu = gpu_available()
    files = ClusterFiles(out)
    fit = _json(files.fit) if storage.exists(files.fit) else None
    prev = (fit or {}).get("labels")
    plan: dict = {"points": n, "partitions": len(sizes), "prev": None}
    policy = "fit"
    if fit is not None and fit["settings"] == _settings(cfg) and fit["points"] <= n and prev is not None and \
            storage.exists(files.final_counts(prev["key"])):
        centroids = _read_npy(files.centroids)
        same_rows = prev["partitions"] <= len(sizes)
        cos_sum, new = 0.0, 0
        for p, (ids, x) in enumerate(iter_partitions(emb_uri) if same_rows else []):
            if p < prev["partitions"]:
                info = _json(files.unit_labels(fit["epoch"], p, "json"))
                if info["rows"] != len(ids) or info["ids_sha256"] != _ids_digest(ids):
                    same_rows = False  # the embeddings were made again from another catalog: labels do not carry
                    break
                continue
            lab = assign(x, centroids, gpu=gpu)
            cos_sum += float(np.einsum("ij,ij->i", x, centroids[lab]).sum())
            new += len(x)
        new_cos = cos_sum / new if new else fit["mean_cos"]
        if not same_rows:
            policy = "refit: the embedded rows before the new ones are not those clustered before"
        elif new and new_cos < fit["mean_cos"] - cfg.recluster_drift:
            policy = f"refit: new rows' mean cosine {new_cos:.3f} < fit's {fit['mean_cos']:.3f} - {cfg.recluster_drift}"
        elif n > fit["points"] * (1 + cfg.recluster_growth):
            policy = f"refit: {n} rows > {fit['points']} at the fit x (1 + {cfg.recluster_growth})"
        else:
            policy = f"assigned {new} new rows to the existing {len(centroids)} centroids (mean cosine {new_cos:.3f})"
            gens = list(fit["generations"])
            gens += [n] if n > gens[-1] else []
            plan.update(epoch=fit["epoch"], requested_k=fit["requested_k"], generations=gens, prev=prev,
                        log=len(_read_log(out)), fit={k: v for k, v in fit.items() if k != "labels"})
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
        plan.update(epoch=(fit["epoch"] + 1) if fit else 0, requested_k=k_req, generations=[n], log=0, fit=None)
    plan.update(policy=policy, centroids=_array_digest(centroids))
    _write_npy(files.fit_centroids, centroids)
    storage.atomic_write_bytes(files.fit_plan, json.dumps(plan, indent=1).encode())
    storage.write_marker(files.fitting, {"policy": policy, "epoch": plan["epoch"], "points": n})
    return plan


def assign_partition(emb_uri: str, out: str, p: int) -> dict:
    """One kmeans-assign unit: partition p's labels against the plan's centroids."""
    from stages.corpus.cluster import _read_npy, _write_npy
    from stages.corpus.embed import iter_partitions

    files = ClusterFiles(out)
    plan = _json(files.fit_plan)
    centroids = _read_npy(files.fit_centroids)
    ids, x = next(iter_partitions(emb_uri, start=p))
    lab = assign(x, centroids, gpu=gpu_available()) if len(centroids) > 1 else np.zeros(len(x), np.int64)
    info = {"rows": len(ids), "ids_sha256": _ids_digest(ids), "centroids": plan["centroids"],
            "cos_sum": float(np.einsum("ij,ij->i", x, centroids[lab]).sum())}
    _write_npy(files.unit_labels(plan["epoch"], p), lab)
    storage.atomic_write_bytes(files.unit_labels(plan["epoch"], p, "json"), json.dumps(info).encode())
    return info


class PartLabels:
    """Labels kept per partition in local memory maps: what `split_oversized` relabels in place."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.bounds = np.concatenate([[0], np.cumsum([len(a) for a in parts])]).astype(np.int64)

    def bincount(self, k: int) -> np.ndarray:
        return sum((np.bincount(a, minlength=k) for a in self.parts), np.zeros(k, np.int64))

    def members(self, c: int) -> np.ndarray:
        return np.concatenate([np.flatnonzero(a == c) + b for a, b in zip(self.parts, self.bounds)])

    def relabel(self, rows: np.ndarray, labels: np.ndarray) -> None:
        for p, a in enumerate(self.parts):
            sel = (rows >= self.bounds[p]) & (rows < self.bounds[p + 1])
            if sel.any():
                a[rows[sel] - self.bounds[p]] = labels[sel]


def finish_assignment(emb_uri: str, out: str, cfg: MiningConfig) -> dict:
    """kmeans-assign's finalize: the split, the final labels and the fit's files; returns its marker."""
    from stages.corpus.cluster import ASSIGN_SCHEMA, _gather, _read_log, _read_npy, _settings, _write_npy
    from stages.corpus.embed import iter_partitions, partition_sizes

    files = ClusterFiles(out)
    plan = _json(files.fit_plan)
    sizes = partition_sizes(emb_uri)
    n, epoch, prev = plan["points"], plan["epoch"], plan["prev"]
    key = layout_key(epoch, n)
    if storage.exists(files.fit):  # from here on the files change: without fit.json a crash means a refit
        storage.fs_path(files.fit)[0].rm(storage.fs_path(files.fit)[1])
    tmp = tempfile.mkdtemp(prefix="aceforge-labels-")
    try:
        parts, cos_sum = [], 0.0
        for p in range(plan["partitions"]):
            kept = prev is not None and p < prev["partitions"]
            src = files.final_part(prev["key"], p) if kept else files.unit_labels(epoch, p)
            if not kept:
                cos_sum += _json(files.unit_labels(epoch, p, "json"))["cos_sum"]
            a = np.lib.format.open_memmap(os.path.join(tmp, str(p)), mode="w+", dtype=np.int64,
                                          shape=(sizes[p],))
            a[:] = _read_npy(src)  # a shape mismatch (labels of other rows) fails here
            parts.append(a)
        labels = PartLabels(parts)
        log = _read_log(out) if prev is not None else []
        centroids, more = split_oversized(labels, _read_npy(files.fit_centroids),
                                          lambda r: _gather(emb_uri, sizes, r), seed=cfg.seed + plan["log"],
                                          niter=cfg.kmeans_niter, max_cluster_size=cfg.max_cluster_size,
                                          gpu=gpu_available())
        log += more
        counts = labels.bincount(len(centroids))
        if int(counts.sum()) != n or int(labels.bounds[-1]) != n:
            raise RuntimeError(f"{out}: {int(counts.sum())} rows labelled, {n} embedded")
        with storage.ParquetSink(files.assignments, ASSIGN_SCHEMA) as asg:
            for p, (ids, _) in enumerate(iter_partitions(emb_uri)):
                _write_npy(files.final_part(key, p), np.asarray(parts[p]))
                asg.write(pa.table({"id": ids, "cluster": pa.array(parts[p], pa.int64())}, schema=ASSIGN_SCHEMA))
    finally:
        del parts
        shutil.rmtree(tmp, ignore_errors=True)
    _write_npy(files.final_counts(key), counts)
    _write_npy(files.centroids, centroids)
    storage.atomic_write_bytes(files.split_log, json.dumps(log, indent=1).encode())
    fit = plan["fit"] or {"settings": _settings(cfg), "points": n, "mean_cos": cos_sum / n, "epoch": epoch,
                          "requested_k": plan["requested_k"]}
    fit = {**fit, "generations": plan["generations"], "labels": {"key": key, "partitions": plan["partitions"]}}
    storage.atomic_write_bytes(files.fit, json.dumps(fit, indent=1).encode())  # the fit's files are complete
    marker = {"key": key, "partitions": plan["partitions"], "k": int(len(centroids)), "requested_k": int(plan["requested_k"]), "points": n,
              "splits": len(log), "epoch": epoch, "policy": plan["policy"], "generations": plan["generations"]}
    storage.write_marker(files.labels, marker)
    return marker


class _ClusterStage(Stage):
    """What the three K-means stages share: the embeddings they read and the clusters folder they write."""

    resources = Resources(cpus=1.0)
    always, scope, config_section = True, "run", "mining"

    @property
    def emb_uri(self) -> str:
        from mining.models.embedders import make_embedder

        return self.layout.embeddings(make_embedder(self.cfg.mining.embedder, self.cfg.models_dir).name)

    @property
    def clusters(self) -> str:
        return self.layout.clusters(self.emb_uri.rstrip("/").rsplit("/", 1)[-1])

    def settings(self) -> dict:
        from stages.corpus.cluster import _settings

        return {**_settings(self.cfg.mining), "drift": self.cfg.mining.recluster_drift,
                "growth": self.cfg.mining.recluster_growth}

    def _report(self, out: str, items: int) -> StageReport | None:
        m = self.current(storage.read_marker(out))
        return None if m is None else StageReport(stage=self.label, items=items, outputs=[out],
                                                  counts={k: v for k, v in m.items() if k != "stage_version"})


class KMeansFitStage(_ClusterStage, SingleItemStage):
    """<clusters>/fitting/: the incremental policy and, on a fit, the centroids (one unit)."""

    name, key = "kmeans-fit", "kmeans_fit"
    needs = ("embed",)

    @property
    def out(self) -> str:
        return ClusterFiles(self.clusters).fitting

    def inputs(self) -> list[str]:
        return [self.emb_uri]

    def run(self, k: int) -> ItemReport:
        plan = decide(self.emb_uri, self.clusters, self.cfg.mining, say=lambda msg: print(f"kmeans: {msg}"))
        self.stamp(self.out)
        return ItemReport(stage=self.label, item=k, counts={"points": plan["points"], "policy": plan["policy"]})

    def item_done(self, k: int) -> bool:
        return self.report() is not None

    def report(self) -> StageReport | None:
        return self._report(self.out, 1)


class KMeansAssignStage(_ClusterStage):
    """<clusters>/labels/: one unit per embedding partition, the split of oversized clusters at the end."""

    name, key, item_name = "kmeans-assign", "kmeans_assign", "partition"
    needs = ("kmeans-fit",)

    @property
    def out(self) -> str:
        return ClusterFiles(self.clusters).labels

    def inputs(self) -> list[str]:
        return [ClusterFiles(self.clusters).fitting]

    def _plan(self) -> dict:
        if getattr(self, "_fit_plan", None) is None:
            self._fit_plan = _json(ClusterFiles(self.clusters).fit_plan)
        return self._fit_plan

    def plan(self) -> int:
        return self._plan()["partitions"]

    def item_outputs(self, k: int) -> list[str]:
        return [ClusterFiles(self.clusters).unit_labels(self._plan()["epoch"], k, "json")]

    def item_done(self, k: int) -> bool:
        """Written for the plan's centroids (a crashed epoch fitted again on other rows is not reused); a
        partition clustered before new rows were assigned keeps its final labels: nothing to do."""
        plan = self._plan()
        if plan["prev"] is not None and k < plan["prev"]["partitions"]:
            return True
        (uri,) = self.item_outputs(k)
        return storage.exists(uri) and _json(uri)["centroids"] == plan["centroids"]

    def run(self, k: int) -> ItemReport:
        info = assign_partition(self.emb_uri, self.clusters, k)
        return ItemReport(stage=self.label, item=k, counts={"rows": info["rows"]})

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def finalize(self, n: int) -> StageReport:
        if n != self._plan()["partitions"]:
            raise RuntimeError(f"{self.label}: {n} items ran, the plan has {self._plan()['partitions']} partitions")
        finish_assignment(self.emb_uri, self.clusters, self.cfg.mining)
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def report(self) -> StageReport | None:
        m = storage.read_marker(self.out)
        return self._report(self.out, 0 if m is None else m["partitions"])
