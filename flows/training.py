"""Training on shard sets: the run's identity and name, the optional encode job, then the Ray Train run,
watched live (flows/live.py).

Several sets train as one mixture (trainer/data.py interleaves them). They are ordered by their manifests'
digests, so the order they are given in changes neither the run nor its name.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.encode import encode_shard_set
from flows.live import live_view
from schemas.config import RunConfig
from tasks.ray_pool import ensure_ray, stop_ray
from tasks.shards import manifest_digest, read_manifest
from tasks import storage
from trainer.data import ShardSet
from trainer.ray_job import TrainResult, base_folder, run_training
from trainer.runs import derived_name, latest_checkpoint, resolve_init, run_identity


@dataclass
class TrainPlan:
    cfg: RunConfig  # train.run_name set: the one given, or derived from the identity
    shard_sets: list[str]  # in training order
    identity: dict


def plan_training(cfg: RunConfig, shard_sets: str | list[str]) -> TrainPlan:
    """Check the sets (complete, none given twice) and init_from, and name the run: one-line errors, before
    any work starts."""
    uris = [shard_sets] if isinstance(shard_sets, str) else list(shard_sets)
    if not uris:
        raise ValueError("no shard set to train on")
    digests: dict[str, str] = {}
    for uri in uris:
        d = manifest_digest(uri)  # fails clearly when the set is incomplete
        if d in digests:
            raise ValueError(f"{uri} holds the same shards as {digests[d]}: give each shard set once")
        digests[d] = uri
    order = sorted(digests)
    init = resolve_init(cfg.train.init_from, cfg.train) if cfg.train.init_from else None
    identity = run_identity(cfg.train, order, init)
    train = cfg.train.model_copy(update={"run_name": cfg.train.run_name or derived_name(identity)})
    return TrainPlan(cfg.model_copy(update={"train": train}), [digests[d] for d in order], identity)


def _shard_set(uri: str) -> ShardSet:
    rows = read_manifest(uri)
    return ShardSet(tuple(storage.join(uri, r.shard) for r in rows), tuple(r.samples for r in rows))


def train_on_shards(cfg: RunConfig, shard_sets: str | list[str]) -> TrainResult:
    """One training run over one or several complete shard sets."""
    plan = plan_training(cfg, shard_sets)
    cfg = plan.cfg
    done = latest_checkpoint(storage.join(storage.absolute(cfg.root), "checkpoints", cfg.train.run_name))
    finished = done is not None and done.step >= cfg.train.max_steps  # returns at once: no Ray, no encoding
    started = False if finished else ensure_ray()  # Ray starts here, not in trainer/: one owner of ray.init
    try:
        uris = plan.shard_sets
        if cfg.train.precompute and not finished:
            base = base_folder(cfg.train, cfg.root)
            uris = [encode_shard_set(u, cfg.train, base) for u in uris]
        return run_training(cfg.train, [_shard_set(u) for u in uris], cfg.root, identity=plan.identity,
                            watch=live_view(cfg.train.run_name))
    finally:
        if started:
            stop_ray()
