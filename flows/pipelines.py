"""Prefect flows: `aceforge-mine` (the mining stage list on the Prefect-over-Ray executor), `aceforge-train`
(a Ray Train run on a shard set) and `aceforge-demo` (flows/demo.py: both, on the demo corpus).

The stage list is `run_mining`, run by either executor (runtime/executors.py): flows/direct.py runs it in one
process. In the UI each stage is a subflow with one task run per item; counts, pair reports with
thumbnails, band histograms, progress and training metrics are artifacts of the run.
"""

from __future__ import annotations

import json

from typing import Any, Callable

from prefect import flow, task
from prefect.events import emit_event

from flows.artifacts import training_summary
from flows.reports import ReportContext, announce_stage
from flows.synthesis import run_synthesis
from schemas.config import ConfigError, RunConfig, parse_config
from store import storage
from store.shards import manifest_digest
from runtime.cache import call, gated
from runtime.executors import PrefectRayExecutor
from schemas.layout import RunLayout
from runtime.lock import RootLock
from stages.registry import Pipeline
from runtime.stage import Stage, StageReport

SHARDS_LANDED = "aceforge.shards.landed"
LANDED_RESOURCE = "aceforge.shards"  # event resource: aceforge.shards.<name>; deployed training listens to these
DEMO_LANDED_RESOURCE = "aceforge.demo.shards"  # the demo's shards: announced, never trained on by a deployment


def run_config(config: dict[str, Any] | None, root: str | None) -> RunConfig:
    data = dict(config or {})
    if root is not None:
        data["root"] = root
    return check_run_config(parse_config(data, RunConfig, "flow parameters"))


def check_run_config(cfg: RunConfig) -> RunConfig:
    """What the config models cannot check on their own, before any work starts: the presets exist and the
    flow computes their features."""
    from mining.pairs.presets import check_presets

    try:
        check_presets(cfg.mining.presets)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def default_writer(cfg: RunConfig) -> dict[str, Any] | None:
    """The instruction writer `mining.instructions.backend` names (template unless configured otherwise)."""
    backend = cfg.mining.instructions.backend
    if backend in ("chat", "local_vlm"):
        return {"kind": backend, **cfg.mining.instructions.model_dump(exclude={"backend"})}
    return {"kind": "template"} if backend == "template" else None


Announce = Callable[[Stage, StageReport, bool], None]


def run_mining(executor, cfg: RunConfig, source: str | None = None, writer: dict[str, Any] | None = None,
               shard_prefix: str = "mined", announce: Announce | None = None) -> dict:
    """The mining stage list, on either executor: (ingest ->) embed -> kmeans -> per preset: mine ->
    instructions -> pack. `announce(stage, report, ran_now)` follows each stage (artifacts, events).
    Returns {root, ingest, <preset>: {mined, instructions, shards}}."""
    writer = writer if writer is not None else default_writer(cfg)

    ran_now: dict[str, bool] = {}

    def run(stage: Stage) -> StageReport:
        ran_now[stage.label] = not stage.complete()
        rep = executor.run(stage)
        if announce:
            announce(stage, rep, ran_now[stage.label])
        return rep

    from flows.preflight import preflight

    preflight(cfg, warn=lambda m: print(f"warning: {m}"))  # models and storage, before any stage writes
    with RootLock(cfg.root, f"a mining run of {source or cfg.root}"):  # one run per root at a time
        return _stages(run, cfg, source, writer, shard_prefix, ran_now)


def _stages(run, cfg: RunConfig, source: str | None, writer: dict[str, Any] | None, shard_prefix: str,
            ran_now: dict[str, bool]) -> dict:
    summary: dict[str, Any] = {"root": cfg.root}
    for (*where, key), stage in Pipeline(cfg, source, writer, shard_prefix).mining():
        group = summary
        for w in where:
            group = group.setdefault(w, {})
        counts = run(stage).counts
        group[key] = stage.summary_entry(counts, ran_now[stage.label])
    if cfg.synthesis.tasks:
        summary["synthesis"] = run_synthesis(run, cfg, shard_prefix, ran_now)
    return summary


def _announcer(cfg: RunConfig, landed: list[dict]) -> Announce:
    """Artifacts per stage in the UI (the report each stage declares, flows/reports.py); every shard set the
    run packs goes into `landed` (with whether it landed in this run), for the one `aceforge.shards.landed`
    event at the end of the run."""
    ctx = ReportContext(cfg, landed)

    def announce(stage: Stage, rep: StageReport, ran_now: bool) -> None:
        announce_stage(ctx, stage, rep, ran_now)

    return announce


def landed_event(root: str, sets: list[dict], resource: str) -> dict | None:
    """The one `aceforge.shards.landed` event of a mining run, as emit_event's arguments: every shard set of
    the run (`shard_uris`, `manifests`, `sets`), when at least one of them landed in it; else None. A set of
    0 samples never lands: training on it can only fail."""
    sets = [s for s in sets if s["samples"] > 0]
    if not any(s["landed_now"] for s in sets):
        return None
    names = [s["name"] for s in sets]
    return {"event": SHARDS_LANDED,
            "resource": {"prefect.resource.id": resource, "prefect.resource.name": ", ".join(names)},
            "payload": {"shard_uris": [s["uri"] for s in sets], "manifests": [s["manifest"] for s in sets],
                        "root": storage.absolute(root), "landed_now": [s["name"] for s in sets if s["landed_now"]],
                        "samples": sum(s["samples"] for s in sets), "shards": sum(s["shards"] for s in sets),
                        "sets": sets}}


@flow(name="aceforge-mine", log_prints=True)
def mine_flow(source: str | None = None, root: str | None = None, config: dict[str, Any] | None = None,
              writer: dict[str, Any] | None = None, shard_prefix: str = "mined",
              landed_resource: str = LANDED_RESOURCE) -> dict:
    """Mine pairs from `source` (or an already ingested catalog) into shard sets under <root>/shards.

    `writer` overrides the configured instruction backend (the demo passes its known transformations). When
    the run completes and at least one shard set landed in it, one `aceforge.shards.landed` event carries
    every shard set of the run, resource `<landed_resource>.<shard_prefix>` (deployed training listens to
    `aceforge.shards.*` only). Each stage is a subflow; its items run on Ray."""
    cfg = run_config(config, root)
    executor = PrefectRayExecutor(cfg.orchestration.items_in_flight, cfg.orchestration.embed_actors)
    landed: list[dict] = []
    try:
        summary = run_mining(executor, cfg, source, writer, shard_prefix, _announcer(cfg, landed))
    finally:
        executor.close()
    resource = f"{landed_resource}.{shard_prefix}"
    record, digests = _announced(cfg.root, resource), {s["uri"]: manifest_digest(s["uri"]) for s in landed}
    for s in landed:  # packed by an earlier run that failed before announcing them: they land now
        s["landed_now"] = s["landed_now"] or record.get(s["uri"]) != digests[s["uri"]]
    for s in landed:
        if s["landed_now"] and not s["samples"]:
            print(f"shard set {s['uri']} holds 0 samples: not announced (nothing to train on)")
    event = landed_event(cfg.root, landed, resource)
    if event is not None:
        emit_event(**event)
        storage.atomic_write_bytes(RunLayout(cfg.root).announced(resource), json.dumps(digests).encode())
    return summary


def _announced(root: str, resource: str) -> dict[str, str]:
    """{shard set URI: manifest digest} of the sets the last event of `resource` carried ({} before any)."""
    fs, path = storage.fs_path(RunLayout(root).announced(resource))
    if not fs.exists(path):
        return {}
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


@task(name="train", task_run_name="train-{run_name}", retries=0, persist_result=True,
      cache_policy=gated(lambda i: [RunLayout(i["root"]).exports(i["run_name"])]))
def train_job(shard_uris: list[str], root: str, train: dict, run_name: str) -> dict:
    """The Ray Train job: Ray retries a crashed worker group from its checkpoint; Prefect does not retry."""
    from flows.training import train_on_shards
    from schemas.config import TrainConfig

    res = train_on_shards(RunConfig(root=root, train=TrainConfig(**{**train, "run_name": run_name})), shard_uris)
    return {"run_dir": str(res.run_dir), "checkpoint": str(res.checkpoint), "step": res.step,
            "metrics": res.metrics, "exports": {k: str(v) for k, v in res.exports.items()},
            "run_name": run_name}


def root_of_shards(shard_uri: str) -> str:
    """<root>/shards/<name> -> <root>: training writes beside the shards it trains on."""
    shards = storage.parent(shard_uri)
    root = storage.parent(shards) if "/" in shards else ""
    if shards.rsplit("/", 1)[-1] != "shards" or not root:
        raise ValueError(f"cannot tell the root of {shard_uri} (not <root>/shards/<name>): pass root")
    return root


def _root_of_sets(shard_uris: list[str]) -> str:
    roots = {storage.absolute(root_of_shards(u)) for u in shard_uris}
    if len(roots) != 1:
        raise ValueError(f"these shard sets lie under {len(roots)} roots ({', '.join(sorted(roots))}): pass root")
    return roots.pop()


@flow(name="aceforge-train", log_prints=True)
def train_flow(shard_uris: list[str], root: str | None = None, config: dict[str, Any] | None = None,
               phases: list[int] | None = None) -> dict:
    """Fine-tune ACE++ on one mixture of complete shard sets (the deployment triggered when a mining run
    lands shards). Without a root (an event that names none) checkpoints go beside the shards:
    <root>/shards/<name> -> <root>. The run is named by what it trains on unless train.run_name is set.

    `phases` (e.g. [1, 2]) runs each training phase in turn, each after the first starting from the previous
    one's final weights (`train.init_from`); left out, the one phase `train.phase` names."""
    from flows.leakage_gate import guard_leakage
    from flows.training import plan_training
    from trainer.runs import next_phase

    if isinstance(shard_uris, str):
        shard_uris = [shard_uris]
    cfg = run_config(config, root or _root_of_sets(shard_uris))
    if phases and cfg.train.run_name:
        raise ConfigError("train.run_name names one run, `phases` makes one per phase: leave run_name unset")
    # the leakage gate once for every phase; the phases and their jobs train on what it let through (the
    # leakage keys are not part of a run's identity)
    shard_uris = guard_leakage(cfg, shard_uris)
    result: dict = {}
    train = cfg.train.model_copy(update={"leakage_source": None})
    for i, phase in enumerate(phases or [cfg.train.phase]):
        if i:  # the next phase from the previous one's last checkpoint: fresh optimiser, step 0
            train = next_phase(train, result["run_dir"])
        train = train.model_copy(update={"phase": phase})
        plan = plan_training(cfg.model_copy(update={"train": train}), shard_uris)
        name = plan.cfg.train.run_name
        result = call(train_job, plan.shard_sets, cfg.root, plan.cfg.train.model_dump(), name)
        training_summary(result["metrics"], f"training metrics: {name}", f"train-{name}")
        print(f"run {name} (phase {phase}): step {result['step']}; exports: {result['exports']}")
    return result
