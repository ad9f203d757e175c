"""The `synthesize` stage group of the mining flow: segmentation and object removal, random-mask
repainting and outpainting, and their shard set; each stage a subflow. Enabled per task by
`synthesis.tasks` (empty by default)."""

from __future__ import annotations

from typing import Any, Callable

from flows.artifacts import counts_table, synth_report
from flows.chain_synthesis import announce_chain_synthesis, run_chain_synthesis
from schemas.config import RunConfig
from tasks import storage
from tasks.segment import SegmentStage
from tasks.stage import Stage, StageReport
from tasks.synth_objects import OBJECT_TASKS, ObjectsStage
from tasks.synth_pack import SynthPackStage
from tasks.synth_parts import RECORDS
from tasks.synth_repaint import REPAINT_TASKS, RepaintStage


def run_synthesis(run: Callable[[Stage], StageReport], cfg: RunConfig, shard_prefix: str,
                  ran_now: dict[str, bool]) -> dict[str, Any]:
    tasks = cfg.synthesis.tasks
    out: dict[str, Any] = {}
    if any(t in OBJECT_TASKS for t in tasks) or "long_context" in tasks:
        out["segment"] = run(SegmentStage(cfg)).counts
        out["objects"] = run(ObjectsStage(cfg)).counts
    if any(t in REPAINT_TASKS for t in tasks):
        out["repaint"] = run(RepaintStage(cfg)).counts
    pack = SynthPackStage(cfg, shard_name=f"{shard_prefix}-{cfg.synthesis.shard_name}")
    if pack.inputs():
        out["shards"] = {**run(pack).counts, "landed_now": ran_now[pack.label]}
    out.update(run_chain_synthesis(run, cfg, shard_prefix, ran_now))
    return out


def _flat(prefix: str, d: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}: ", v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def announce_synthesis(cfg: RunConfig, stage: Stage, rep: StageReport) -> bool:
    """Count tables and a report of sampled records with thumbnails; False for a stage not of this group."""
    if announce_chain_synthesis(cfg, stage, rep):
        return True
    if not isinstance(stage, (SegmentStage, ObjectsStage, RepaintStage, SynthPackStage)):
        return False
    counts_table(stage.label, _flat("", rep.counts), f"{stage.label}-counts")
    if isinstance(stage, (ObjectsStage, RepaintStage)):
        marker = storage.read_marker(rep.outputs[0]) or {}
        parts = marker.get("parts") or []
        records = storage.read_parquet(storage.join(rep.outputs[0], parts[0], RECORDS)).to_pylist() if parts else []
        synth_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", seed=cfg.synthesis.seed)
    return True
