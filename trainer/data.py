"""Training data: AceSamples from WebDataset shards -> panels, filtered by stage, weighted by task.

Deterministic: the n-th example a worker sees depends only on (seed, epoch, n), so a resumed run can skip
exactly the examples it already trained on. Workers split shards when there are enough of them, else
samples (every worker reads every shard and keeps its share).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import webdataset as wds

from schemas.config import TrainConfig
from schemas.records import AceSample
from schemas.shard_layout import decode_sample
from schemas.taxonomy import zero_ref_tasks
from trainer.lcu import Panel
from trainer.panels import sample_panels


@dataclass
class Example:
    key: str
    task: str
    instruction: str
    panels: list[Panel]


def _unit_interval(seed: int, epoch: int, key: str) -> float:
    h = hashlib.sha256(f"{seed}|{epoch}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def keep_sample(sample: AceSample, cfg: TrainConfig, epoch: int) -> bool:
    """Stage 1: 0-ref tasks only. Stage 2: every task, kept with probability weight / max weight."""
    if cfg.stage == 1:
        return sample.task in _ZERO_REF
    weights = cfg.task_weights
    w = weights.get(sample.task, 1.0)
    top = max([1.0, *weights.values()]) if weights else 1.0
    return w > 0 and _unit_interval(cfg.seed, epoch, sample.key) < w / top


_ZERO_REF = frozenset(zero_ref_tasks())


def _no_split(src):
    yield from src


def _raw_samples(urls: list[str], rank: int, world: int) -> Iterator[dict]:
    by_shard = len(urls) >= world
    mine = urls[rank::world] if by_shard else urls
    # the split is ours (above): webdataset must not split again by torch.distributed rank
    ds = wds.WebDataset(mine, shardshuffle=False, empty_check=False, nodesplitter=_no_split)
    for i, raw in enumerate(ds):
        if by_shard or i % world == rank:
            yield raw


def iter_examples(urls: list[str], cfg: TrainConfig, rank: int = 0, world: int = 1,
                  start: int = 0) -> Iterator[Example]:
    """Examples forever (epoch after epoch), skipping the first `start` (resume)."""
    if not urls:
        raise ValueError("no shards to train on")
    n = 0
    for epoch in range(1_000_000):
        produced = 0
        for raw in _raw_samples(urls, rank, world):
            sample = decode_sample(raw)
            if not keep_sample(sample, cfg, epoch):
                continue
            produced += 1
            if n >= start:
                yield Example(sample.key, sample.task, sample.instruction,
                              sample_panels(sample, cfg.max_tokens, cfg.form))
            n += 1
        if produced == 0:
            raise ValueError(f"no sample of these shards is trainable in stage {cfg.stage} "
                             f"(stage 1 takes 0-ref tasks only)")


def tokens_of(example: Example) -> int:
    return int(sum(np.prod(p.image.shape[-2:]) for p in example.panels) // 256)
