"""The `synthesize` stage group of the mining flow: segmentation and object removal, random-mask
repainting and outpainting, faces, OCR-verified text removal and rendering, condition maps and
restoration, style and chains, and their shard sets; each stage a subflow with counts and thumbnails
(flows/reports.py). Enabled per task by `synthesis.tasks` (empty by default); which stages run, in which
order, is the registry's (stages/registry.py)."""

from __future__ import annotations

from typing import Any, Callable

from schemas.config import RunConfig
from stages.registry import Pipeline
from runtime.stage import Stage, StageReport


def run_synthesis(run: Callable[[Stage], StageReport], cfg: RunConfig, shard_prefix: str,
                  ran_now: dict[str, bool], shard_sets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The enabled synthesis stages in registry order (those of `shard_sets` only, when given):
    {segment, objects, ..., shards, style, ..., chain_shards: counts}."""
    out: dict[str, Any] = {}
    for (_, key), stage in Pipeline(cfg, shard_prefix=shard_prefix).synthesis(shard_sets):
        counts = run(stage).counts
        out[key] = stage.summary_entry(counts, ran_now[stage.label])
    return out
