"""Prefect tasks: one per coarse unit of work. Each calls the stage function, which writes to a
deterministic path and leaves a completion marker; the markers decide what a re-run skips, and Prefect's
cache (inputs + task source, results persisted, keyed only while the unit's outputs exist: tasks/cache.py)
spares even the call. Retries back off.

Configs travel as plain dicts (validated again here), data as paths.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prefect import task
from prefect.events import emit_event

from mining.embedders import make_embedder
from mining.instructions import (ChatInstructionWriter, InstructionWriter, KnownTransformWriter,
                                 TemplateInstructionWriter)
from mining.pair_classifier import PairClassifier
from mining.presets import preset as get_preset
from schemas.config import IngestConfig, InstructionConfig, MiningConfig, ShardConfig
from schemas.records import Generator
from tasks import storage
from tasks.cache import gated
from tasks.cluster import cluster_embeddings, clusters_uri, load_assignments
from tasks.embed import embeddings_uri, finalize_embeddings, load_embeddings, part_name, write_partition
from tasks.ingest import (catalog_size, catalog_slice, existing_catalog, existing_partitions, finalize_ingest,
                          ingest_partition, load_catalog, plan_ingest)
from tasks.instruct import instruct_pairs, load_instructed, pair_samples
from tasks.mine_pairs import (batch_uri, check_inputs, cluster_batches, load_pairs, merge_batches, mine_batch,
                              pairs_uri, resolve_band)
from tasks.shards import write_shard_set

UNIT = dict(retries=2, retry_delay_seconds=[2, 10], persist_result=True)


SHARDS_LANDED = "aceforge.shards.landed"
LANDED_RESOURCE = "aceforge.shards"  # event resource: aceforge.shards.<name>; deployed training listens to these
DEMO_LANDED_RESOURCE = "aceforge.demo.shards"  # the demo's shards: announced, never trained on by a deployment


def _absolute(uri: str) -> str:
    """Events leave this process: a local path in one is absolute (a worker runs in a temporary folder)."""
    return uri if "://" in uri else os.path.abspath(uri)


def _marker(uri: str) -> str:
    return storage.join(uri, storage.MARKER)


@task(name="ingest-plan", cache_policy=gated(lambda i: [storage.join(i["root"], "catalog", "plan.json")]), **UNIT)
def plan_ingest_unit(source: str, root: str, ingest: dict) -> int:
    """The number of partitions; a complete catalog of this source and config is not listed again, and a
    catalog of another source is refused (as `aceforge ingest` does without --force)."""
    cfg = IngestConfig(**ingest)
    if existing_catalog(source, root, cfg) is not None:
        return existing_partitions(root)
    return plan_ingest(source, root, cfg)


@task(name="ingest-partition", task_run_name="ingest-partition-{k}", **UNIT,
      cache_policy=gated(lambda i: [storage.join(i["root"], "catalog", "parts", f"part-{i['k']:05d}.{w}.parquet")
                                    for w in ("images", "quarantine")]))
def ingest_partition_unit(root: str, k: int, ingest: dict) -> int:
    return ingest_partition(root, k, IngestConfig(**ingest))


@task(name="ingest-finalize", cache_policy=gated(lambda i: [_marker(storage.join(i["root"], "catalog"))]), **UNIT)
def finalize_ingest_unit(root: str, n: int) -> dict:
    marker = storage.read_marker(storage.join(root, "catalog"))
    if marker is not None:
        return marker["counts"]
    return finalize_ingest(root, n).to_dict()


_POOLS: dict[tuple, object] = {}
_POOLS_LOCK = threading.Lock()


def _pool(kind: str, models_dir: str, max_pixels: int, actors: int):
    from tasks.ray_pool import EmbedPool

    key = (kind, models_dir, max_pixels, actors)
    with _POOLS_LOCK:  # units run in threads: one pool per process, actors load their model once
        if key not in _POOLS:
            _POOLS[key] = EmbedPool(kind, models_dir, max_pixels, actors)
        return _POOLS[key]


def close_pools() -> None:
    """Kill the embedding actors, and stop the local Ray this process started for them."""
    from tasks.ray_pool import stop_ray

    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()
    stop_ray()


def embedder_uri(root: str, kind: str, models_dir: str) -> str:
    return embeddings_uri(root, make_embedder(kind, models_dir).name)


@task(name="embed-partition", task_run_name="embed-partition-{k}", **UNIT, cache_policy=gated(
    lambda i: [storage.join(embedder_uri(i["root"], i["mining"]["embedder"], i["models_dir"]), part_name(i["k"]))]))
def embed_partition_unit(root: str, k: int, mining: dict, models_dir: str, ingest: dict, actors: int = 2) -> int:
    mc, ic = MiningConfig(**mining), IngestConfig(**ingest)
    out = embedder_uri(root, mc.embedder, models_dir)
    part_uri = storage.join(out, part_name(k))
    if storage.exists(part_uri):
        return 0
    records = catalog_slice(root, k * mc.partition_size, (k + 1) * mc.partition_size)
    pool = _pool(mc.embedder, models_dir, ic.max_pixels, actors)
    ids, vecs, skipped = pool.embed(records, mc.batch_size)
    write_partition(part_uri, ids, vecs, pool.name, pool.version, skipped, len(records))
    return len(ids)


@task(name="embed-finalize", **UNIT, cache_policy=gated(
    lambda i: [_marker(embedder_uri(i["root"], i["mining"]["embedder"], i["models_dir"]))]))
def finalize_embeddings_unit(root: str, n: int, mining: dict, models_dir: str) -> str:
    mc = MiningConfig(**mining)
    out = embedder_uri(root, mc.embedder, models_dir)
    if storage.read_marker(out) is not None:
        return out
    return finalize_embeddings(out, n, catalog_size(root), tuple(make_embedder(mc.embedder, models_dir).band))


@task(name="kmeans", cache_policy=gated(lambda i: [_marker(clusters_uri(i["root"], i["emb_uri"]))]), **UNIT)
def kmeans_unit(root: str, emb_uri: str, mining: dict) -> str:
    ids, x, _ = load_embeddings(emb_uri)
    return cluster_embeddings(ids, x, root, emb_uri, MiningConfig(**mining))


def _mining_inputs(emb_uri: str, mc: MiningConfig, models_dir: str):
    ids, x, marker = load_embeddings(emb_uri)
    classifier = PairClassifier(Path(models_dir) / mc.pair_classifier if mc.pair_classifier else None)
    return ids, x, marker, classifier, Generator(name=marker["embedder"], version=marker["version"])


@task(name="mine-batch", task_run_name="mine-{preset_name}-batch-{k}", **UNIT, cache_policy=gated(
    lambda i: [_marker(batch_uri(i["root"], get_preset(i["preset_name"]), i["k"]))]))
def mine_batch_unit(root: str, emb_uri: str, cl_uri: str, preset_name: str, k: int, mining: dict,
                    models_dir: str) -> dict:
    mc, preset = MiningConfig(**mining), get_preset(preset_name)
    done = storage.read_marker(batch_uri(root, preset, k))
    if done is not None:  # complete: not even the embeddings are loaded again
        return done["counts"]
    ids, x, marker, classifier, gen = _mining_inputs(emb_uri, mc, models_dir)
    check_inputs(preset, gen, classifier, "image")
    assignments = load_assignments(cl_uri)
    clusters = cluster_batches(assignments, mc.clusters_per_batch)[k]
    band = resolve_band(preset, mc, tuple(marker["band"]))
    rep = mine_batch(ids, x, assignments, clusters, batch_uri(root, preset, k), preset, mc, gen, band, classifier)
    return rep.counts()


@task(name="mine-merge", task_run_name="mine-{preset_name}-merge", **UNIT, cache_policy=gated(
    lambda i: [_marker(pairs_uri(i["root"], get_preset(i["preset_name"])))]))
def merge_pairs_unit(root: str, emb_uri: str, preset_name: str, n: int, mining: dict) -> dict:
    mc, preset = MiningConfig(**mining), get_preset(preset_name)
    band = resolve_band(preset, mc, tuple(storage.read_marker(emb_uri)["band"]))
    return merge_batches(root, preset, n, band).counts()


def demo_known_writer(corpus_dir: str, root: str) -> KnownTransformWriter:
    """Instructions of the demo corpus' known transformations, keyed by catalog ids."""
    from tasks.demo_corpus import family_member_ids

    known = {}
    for members in family_member_ids(corpus_dir, load_catalog(root)).values():
        (_, base), *variants = members
        for m, var in variants:
            if base and var and m["instruction"]:
                known[(base, var)] = m["instruction"]
    return KnownTransformWriter(known)


def make_writer(spec: dict, root: str) -> InstructionWriter:
    """{'kind': 'template'}, {'kind': 'chat', ...InstructionConfig fields} or
    {'kind': 'demo', 'corpus': <demo corpus folder>}."""
    if spec["kind"] == "demo":
        return demo_known_writer(spec["corpus"], root)
    if spec["kind"] == "template":
        return TemplateInstructionWriter()
    ic = InstructionConfig(**{k: v for k, v in spec.items() if k != "kind"})
    return ChatInstructionWriter(ic.base_url, ic.model, storage.join(root, "cache", "instructions"),
                                 api_key_env=ic.api_key_env, timeout_s=ic.timeout_s, retries=ic.retries)


@task(name="instructions", task_run_name="instructions-{preset_name}", **UNIT, cache_policy=gated(
    lambda i: [_marker(storage.join(pairs_uri(i["root"], get_preset(i["preset_name"])), "instructed"))]))
def instruct_unit(root: str, preset_name: str, writer: dict, ingest: dict) -> dict:
    uri = pairs_uri(root, get_preset(preset_name))
    by_id = {r.id: r for r in load_catalog(root)}
    _, counts = instruct_pairs(load_pairs(uri), make_writer(writer, root), by_id, uri, IngestConfig(**ingest))
    return counts


@task(name="pack-shards", task_run_name="pack-{shard_name}", **UNIT,
      cache_policy=gated(lambda i: [_marker(storage.join(i["root"], "shards", i["shard_name"]))]))
def pack_unit(root: str, preset_name: str, shard_name: str, shards: dict, ingest: dict,
              landed_resource: str = LANDED_RESOURCE) -> dict:
    """Write the shard set; when it completes here (not when it already existed), announce it."""
    uri = storage.join(pairs_uri(root, get_preset(preset_name)), "instructed")
    by_id = {r.id: r for r in load_catalog(root)}
    out = storage.join(root, "shards", shard_name)
    rep = write_shard_set(pair_samples(load_instructed(uri), by_id, IngestConfig(**ingest)), out,
                          ShardConfig(**shards))
    result = {"uri": rep.uri, "shards": rep.shards, "samples": rep.samples, "bytes": rep.bytes,
              "counts_by_task": rep.counts_by_task, "landed_now": not rep.skipped_existing}
    if result["landed_now"]:
        emit_event(SHARDS_LANDED, resource={"prefect.resource.id": f"{landed_resource}.{shard_name}",
                                            "prefect.resource.name": shard_name},
                   payload={"shard_uri": _absolute(rep.uri), "root": _absolute(root),
                            "manifest": _absolute(storage.join(rep.uri, "manifest.parquet")),
                            "samples": rep.samples, "shards": rep.shards, "counts_by_task": rep.counts_by_task})
    return result
