"""Prefect flows: `aceforge-mine` (ingest -> embed -> cluster -> mine pairs -> instructions -> pack),
`aceforge-train` (a Ray Train run on a shard set) and `aceforge-demo` (both, on the demo corpus).

Each stage is a subflow with one task run per unit of work, so the UI shows them apart; counts, pair
reports with thumbnails, band histograms, progress and training metrics are artifacts of the run.
Synthesis stages (object removal, text pairs, condition maps) slot in as subflows between mining and
packing, each writing under <root>/synth/<kind>/ and adding its samples to the pack.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.futures import as_completed
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from flows.artifacts import artifact_key, band_histogram, counts_table, pair_report, training_summary
from mining.presets import preset as get_preset
from schemas.config import RunConfig, parse_config
from tasks import storage, units
from tasks.cache import fresh, gated
from tasks.ingest import catalog_size, load_catalog
from tasks.instruct import load_instructed
from tasks.mine_pairs import cluster_batches, pairs_uri


def run_config(config: dict[str, Any] | None, root: str | None) -> RunConfig:
    data = dict(config or {})
    if root is not None:
        data["root"] = root
    return parse_config(data, RunConfig, "flow parameters")


def _call(fn, *args):
    """Run one unit task in this flow; its cached result is used only while its outputs exist."""
    return fresh(fn, *args)(*args)


def _units(fn, args_list: list[tuple], title: str, key: str, in_flight: int) -> list:
    """One task run per unit, at most `in_flight` submitted at a time; a progress artifact; raise if any
    failed. Results come back in unit order."""
    art = create_progress_artifact(0.0, key=artifact_key(key), description=title)
    results: list = [None] * len(args_list)
    pending: dict = {}
    todo = iter(enumerate(args_list))
    done = 0
    for k, a in itertools.islice(todo, in_flight):
        pending[fresh(fn, *a).submit(*a)] = k
    while pending:
        finished = next(as_completed(list(pending)))
        results[pending.pop(finished)] = finished.result()  # raises the unit's error once its retries are spent
        done += 1
        update_progress_artifact(art, 100.0 * done / len(args_list))
        for k, a in itertools.islice(todo, 1):
            pending[fresh(fn, *a).submit(*a)] = k
    return results


@flow(name="ingest")
def ingest_stage(source: str, cfg: RunConfig) -> dict:
    ingest = cfg.ingest.model_dump()
    n = _call(units.plan_ingest_unit, source, cfg.root, ingest)
    _units(units.ingest_partition_unit, [(cfg.root, k, ingest) for k in range(n)], "ingest partitions",
           "ingest-progress", cfg.orchestration.units_in_flight)
    report = _call(units.finalize_ingest_unit, cfg.root, n)
    counts_table("ingest", {"seen": report["seen"], "accepted": report["accepted"],
                            "duplicates": report["duplicates"],
                            **{f"quarantined: {r}": c for r, c in report["quarantined"].items()}}, "ingest-counts")
    return report


@flow(name="embed-and-cluster")
def embed_stage(cfg: RunConfig) -> tuple[str, str]:
    mining, n_catalog = cfg.mining.model_dump(), catalog_size(cfg.root)
    n = -(-n_catalog // cfg.mining.partition_size)
    try:
        _units(units.embed_partition_unit, [(cfg.root, k, mining, cfg.models_dir, cfg.ingest.model_dump(),
                                             cfg.orchestration.embed_actors) for k in range(n)],
               "embedding partitions", "embed-progress", cfg.orchestration.units_in_flight)
    finally:
        units.close_pools()  # actors hold models: give their resources back before training
    emb_uri = _call(units.finalize_embeddings_unit, cfg.root, n, mining, cfg.models_dir)
    return emb_uri, _call(units.kmeans_unit, cfg.root, emb_uri, mining)


@flow(name="mine-pairs")
def mine_stage(cfg: RunConfig, emb_uri: str, cl_uri: str, preset_name: str) -> dict:
    from tasks.cluster import load_assignments

    mining = cfg.mining.model_dump()
    n = len(cluster_batches(load_assignments(cl_uri), cfg.mining.clusters_per_batch))
    _units(units.mine_batch_unit, [(cfg.root, emb_uri, cl_uri, preset_name, k, mining, cfg.models_dir)
                                   for k in range(n)], f"mining {preset_name}", f"mine-{preset_name}-progress",
           cfg.orchestration.units_in_flight)
    counts = _call(units.merge_pairs_unit, cfg.root, emb_uri, preset_name, n, mining)
    counts_table(f"pairs: {preset_name}", {"clusters": counts["clusters"], "band edges": counts["edges"],
                                           "sets": counts["sets"], "pairs": counts["pairs"],
                                           **{f"dropped: {r}": c for r, c in counts["drops"].items()}},
                 f"pairs-{preset_name}")
    marker = storage.read_marker(pairs_uri(cfg.root, get_preset(preset_name)))
    band_histogram(pairs_uri(cfg.root, get_preset(preset_name)), tuple(marker["band"]),
                   f"band similarities: {preset_name}", f"band-{preset_name}")
    return counts


def default_writer(cfg: RunConfig) -> dict[str, Any] | None:
    """The instruction writer `mining.instructions.backend` names (template unless configured otherwise)."""
    backend = cfg.mining.instructions.backend
    if backend == "chat":
        return {"kind": "chat", **cfg.mining.instructions.model_dump(exclude={"backend"})}
    return {"kind": "template"} if backend == "template" else None


@flow(name="aceforge-mine", log_prints=True)
def mine_flow(source: str | None = None, root: str | None = None, config: dict[str, Any] | None = None,
              writer: dict[str, Any] | None = None, shard_prefix: str = "mined",
              landed_resource: str = units.LANDED_RESOURCE) -> dict:
    """Mine pairs from `source` (or an already ingested catalog) into shard sets under <root>/shards.

    `writer` overrides the configured instruction backend (the demo passes its known transformations);
    `landed_resource` prefixes the resource of each `aceforge.shards.landed` event (deployed training
    listens to `aceforge.shards.*` only)."""
    cfg = run_config(config, root)
    summary: dict[str, Any] = {"root": cfg.root}
    if source is not None:
        summary["ingest"] = ingest_stage(source, cfg)
    emb_uri, cl_uri = embed_stage(cfg)
    if writer is None:
        writer = default_writer(cfg)
    catalog = {r.id: r for r in load_catalog(cfg.root)} if writer is not None else {}
    for name in cfg.mining.presets:
        summary[name] = {"mined": mine_stage(cfg, emb_uri, cl_uri, name)}
        if writer is None:
            print(f"{name}: mining.instructions.backend is none; pairs stay in pairs/, unpacked")
            continue
        ins = _call(units.instruct_unit, cfg.root, name, writer, cfg.ingest.model_dump())
        counts_table(f"instructions: {name}", ins, f"instructions-{name}")
        pairs = load_instructed(storage.join(pairs_uri(cfg.root, get_preset(name)), "instructed"))
        pair_report(pairs, catalog, f"sampled pairs: {name}", f"pairs-report-{name}", seed=cfg.mining.seed)
        summary[name]["instructions"] = ins
        summary[name]["shards"] = _call(units.pack_unit, cfg.root, name, f"{shard_prefix}-{name}",
                                                  cfg.shards.model_dump(), cfg.ingest.model_dump(),
                                                  landed_resource)
    return summary


@task(name="train", task_run_name="train-{run_name}", retries=0, persist_result=True,
      cache_policy=gated(lambda i: [str(Path(i["root"]) / "checkpoints" / "exports" / i["run_name"])]))
def train_unit(shard_uri: str, root: str, train: dict, run_name: str) -> dict:
    """The Ray Train job: Ray retries a crashed worker group from its checkpoint; Prefect does not retry."""
    from flows.training import train_on_shards
    from schemas.config import TrainConfig

    res = train_on_shards(RunConfig(root=root, train=TrainConfig(**train)), shard_uri)
    return {"run_dir": str(res.run_dir), "checkpoint": str(res.checkpoint), "step": res.step,
            "metrics": res.metrics, "exports": {k: str(v) for k, v in res.exports.items()}}


def root_of_shards(shard_uri: str) -> str:
    """<root>/shards/<name> -> <root>: training writes beside the shards it trains on."""
    root, shards, _ = shard_uri.rstrip("/").rsplit("/", 2) if shard_uri.count("/") >= 2 else ("", "", "")
    if shards != "shards" or not root:
        raise ValueError(f"cannot tell the root of {shard_uri} (not <root>/shards/<name>): pass root")
    return root


@flow(name="aceforge-train", log_prints=True)
def train_flow(shard_uri: str, root: str | None = None, config: dict[str, Any] | None = None) -> dict:
    """Fine-tune ACE++ on a complete shard set (the deployment triggered when shards land). Without a root
    (an event that names none) checkpoints go beside the shards: <root>/shards/<name> -> <root>."""
    cfg = run_config(config, root or root_of_shards(shard_uri))
    result = _call(train_unit, shard_uri, cfg.root, cfg.train.model_dump(), cfg.train.run_name)
    training_summary(result["metrics"], f"training metrics: {cfg.train.run_name}", f"train-{cfg.train.run_name}")
    print(f"trained to step {result['step']}; exports: {result['exports']}")
    return result
