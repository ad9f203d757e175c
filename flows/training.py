"""Training on shard sets: the run's identity and name, the optional encode job, then the Ray Train run,
watched live (flows/live.py).

Several shard sets train as one mixture (trainer/data.py interleaves them). They are ordered by their manifests'
digests, so the order they are given in changes neither the run nor its name. The run reads the version of
each shard set it is named after: each is pinned before Ray trains (flows/snapshot.py) and identity.json records
how. A training phase no sample of the shard sets can train in is refused from their manifests, before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from collections import Counter

from flows.encode import encode_shard_set
from flows.live import live_view
from flows.snapshot import SNAPSHOT_DIR, pin_shard_set, release_snapshots
from schemas.config import RunConfig, TrainConfig
from schemas.layout import RunLayout
from runtime.ray_pool import ensure_ray, stop_ray
from store.shards import manifest_digest, read_manifest
from store import storage
from trainer.data import ShardSet, untrainable
from trainer.ray_job import TrainResult, base_folder, run_training
from trainer.runs import claim_run_dir, derived_name, latest_checkpoint, record_sets, resolve_init, run_identity


def check_trainable(train: TrainConfig, shard_sets: list[str], phases: list[int] | None = None) -> None:
    """A one-line ValueError when no sample of these complete shard sets trains in one of `phases` (default
    train.phase), from the tasks their manifests count: nothing is read but the manifests."""
    counts: Counter[str] = Counter()
    for uri in shard_sets:
        for row in read_manifest(uri):
            counts.update(row.counts_by_task)
    for phase in phases or [train.phase]:
        why = untrainable(train.model_copy(update={"phase": phase}), dict(counts))
        if why:
            raise ValueError(f"{', '.join(shard_sets)}: {why}")


@dataclass
class TrainPlan:
    cfg: RunConfig  # train.run_name set: the one given, or derived from the identity
    shard_sets: list[str]  # in training order
    identity: dict


def plan_training(cfg: RunConfig, shard_sets: str | list[str]) -> TrainPlan:
    """Check the shard sets (complete, none given twice) and init_from, and name the run: one-line errors, before
    any work starts."""
    uris = [shard_sets] if isinstance(shard_sets, str) else list(shard_sets)
    if not uris:
        raise ValueError("no shard set to train on")
    from flows.leakage_gate import guard_leakage

    uris = guard_leakage(cfg, uris)
    digests: dict[str, str] = {}
    for uri in uris:
        d = manifest_digest(uri)  # fails clearly when the shard set is incomplete
        if d in digests:
            raise ValueError(f"{uri} holds the same shards as {digests[d]}: give each shard set once")
        digests[d] = uri
    check_trainable(cfg.train, uris)
    order = sorted(digests)
    init = resolve_init(cfg.train.init_from, cfg.train) if cfg.train.init_from else None
    identity = run_identity(cfg.train, order, init)
    train = cfg.train.model_copy(update={"run_name": cfg.train.run_name or derived_name(identity)})
    return TrainPlan(cfg.model_copy(update={"train": train}), [digests[d] for d in order], identity)


def _shard_set(uri: str) -> ShardSet:
    rows = read_manifest(uri)
    return ShardSet(tuple(storage.join(uri, r.shard) for r in rows), tuple(r.samples for r in rows))


def _pin(plan: TrainPlan, run_dir: str) -> list[ShardSet]:
    """Claim the run folder, then pin each set at the version the run is named after (identity.json records
    how); with `precompute`, encode what was pinned. The run then reads nothing the miner may replace."""
    fs, path = storage.fs_path(run_dir)
    fs.makedirs(path, exist_ok=True)
    claim_run_dir(run_dir, plan.identity, plan.shard_sets)
    into = storage.join(run_dir, SNAPSHOT_DIR)
    pinned = [pin_shard_set(u, d, into) for u, d in zip(plan.shard_sets, plan.identity["shard_sets"])]
    record_sets(run_dir, [record for _, record in pinned])
    train = plan.cfg.train
    if not train.precompute:
        return [s for s, _ in pinned]
    base = base_folder(train, plan.cfg.root)
    sets = []
    for _, record in pinned:  # a snapshot is a complete shard set: its side shard set is encoded beside it, in the run
        if "snapshot" in record:
            sets.append(_shard_set(encode_shard_set(record["snapshot"], train, base)))
        else:
            encoded = encode_shard_set(record["uri"], train, base)
            sets.append(pin_shard_set(encoded, manifest_digest(encoded), into)[0])
    return sets


def train_on_shards(cfg: RunConfig, shard_sets: str | list[str]) -> TrainResult:
    """One training run over one or several complete shard sets, each read at the version the run is named
    after; the snapshots go once the run reaches max_steps."""
    plan = plan_training(cfg, shard_sets)
    cfg = plan.cfg
    run_dir = RunLayout(storage.absolute(cfg.root)).checkpoints(cfg.train.run_name)
    done = latest_checkpoint(run_dir)
    finished = done is not None and done.step >= cfg.train.max_steps  # returns at once: no Ray, no encoding
    started = False if finished else ensure_ray()  # Ray starts here, not in trainer/: one owner of ray.init
    try:
        sets = [_shard_set(u) for u in plan.shard_sets] if finished else _pin(plan, run_dir)
        res = run_training(cfg.train, sets, cfg.root, identity=plan.identity, watch=live_view(cfg.train.run_name))
    finally:
        if started:
            stop_ray()
    if res.step >= cfg.train.max_steps:
        release_snapshots(res.run_dir)
    if res.data is not None and res.data.read:
        print(f"run {cfg.train.run_name} data (since it last started): {res.data.summary()}")
    return res
