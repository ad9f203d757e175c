"""Training on a shard set: the optional encode job, then the Ray Train run, watched live (flows/live.py)."""

from __future__ import annotations

from flows.encode import encode_shard_set
from flows.live import live_view
from schemas.config import RunConfig
from tasks.ray_pool import ensure_ray, stop_ray
from tasks.shards import shard_uris
from trainer.ray_job import TrainResult, base_folder, run_training


def train_on_shards(cfg: RunConfig, shard_uri: str) -> TrainResult:
    urls = shard_uris(shard_uri)  # fails clearly when the set is incomplete
    started = ensure_ray()  # Ray starts here, not in trainer/: one owner of ray.init
    try:
        if cfg.train.precompute:
            urls = shard_uris(encode_shard_set(shard_uri, cfg.train, base_folder(cfg.train, cfg.root)))
        return run_training(cfg.train, urls, cfg.root, watch=live_view(cfg.train.run_name))
    finally:
        if started:
            stop_ray()
