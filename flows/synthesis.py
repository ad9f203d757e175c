"""The `synthesize` stage group of the mining flow: segmentation and object removal, random-mask
repainting and outpainting, faces, OCR-verified text removal and rendering, condition maps and
restoration, style and chains, and their shard sets; each stage a subflow with counts and thumbnails.
Enabled per task by `synthesis.tasks` (empty by default)."""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from flows.artifacts import counts_table, synth_report
from flows.chain_synthesis import announce_chain_synthesis, run_chain_synthesis
from schemas.config import FACE_TASKS, RunConfig
from tasks import storage
from tasks.segment import SegmentStage
from tasks.stage import Stage, StageReport
from tasks.synth_faces import FACES, FacePairsStage, FacesStage
from tasks.synth_maps import MAP_TASKS, MapsStage
from tasks.synth_objects import OBJECT_TASKS, ObjectsStage
from tasks.synth_pack import SynthPackStage
from tasks.synth_parts import RECORDS, png
from tasks.synth_repaint import REPAINT_TASKS, RepaintStage
from tasks.synth_text import TEXT_TASKS, TextStage


def run_synthesis(run: Callable[[Stage], StageReport], cfg: RunConfig, shard_prefix: str,
                  ran_now: dict[str, bool]) -> dict[str, Any]:
    tasks = cfg.synthesis.tasks
    out: dict[str, Any] = {}
    if any(t in OBJECT_TASKS for t in tasks) or "long_context" in tasks:
        out["segment"] = run(SegmentStage(cfg)).counts
        out["objects"] = run(ObjectsStage(cfg)).counts
    if any(t in REPAINT_TASKS for t in tasks):
        out["repaint"] = run(RepaintStage(cfg)).counts
    if any(t in FACE_TASKS for t in tasks):
        out["faces"] = run(FacesStage(cfg)).counts
        out["face_pairs"] = run(FacePairsStage(cfg)).counts
    if any(t in TEXT_TASKS for t in tasks):
        out["text"] = run(TextStage(cfg)).counts
    if any(t in MAP_TASKS for t in tasks):
        out["maps"] = run(MapsStage(cfg)).counts
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
    if isinstance(stage, (FacesStage, FacePairsStage)):
        counts_table(stage.label, _flat("", rep.counts), f"{stage.label}-counts")
        face_report(stage, rep, cfg.synthesis.seed)
        return True
    if announce_chain_synthesis(cfg, stage, rep):
        return True
    if not isinstance(stage, (SegmentStage, ObjectsStage, RepaintStage, TextStage, MapsStage, SynthPackStage)):
        return False
    counts_table(stage.label, _flat("", rep.counts), f"{stage.label}-counts")
    if isinstance(stage, MapsStage):  # one record per map kind, both directions
        from flows.maps_report import maps_report

        maps_report(rep.outputs[0], f"condition maps and restoration: {stage.label}", f"{stage.label}-report")
        return True
    if isinstance(stage, (ObjectsStage, RepaintStage, TextStage)):
        marker = storage.read_marker(rep.outputs[0]) or {}
        parts = marker.get("parts") or []
        records = storage.read_parquet(storage.join(rep.outputs[0], parts[0], RECORDS)).to_pylist() if parts else []
        synth_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", seed=cfg.synthesis.seed)
    return True


def face_report(stage, rep: StageReport, seed: int, n: int = 8) -> None:
    """UI thumbnails: aligned chips of the kept faces (faces stage) or sampled pair records (pair stage)."""
    marker = storage.read_marker(rep.outputs[0]) or {}
    parts = marker.get("parts") or []
    if not parts:
        return
    if isinstance(stage, FacesStage):
        rows = storage.read_parquet(storage.join(rep.outputs[0], parts[0], FACES)).to_pylist()[:64]
        records = [{"edit_png": r["image_png"], "mask_png": r["chip_png"], "target_png": r["chip_png"],
                    "instructions": json.dumps({"face": r["source_id"][:12]}), "generators": json.dumps([]),
                    "scores": json.dumps({"score": r["score"], "roll_deg": r["roll_deg"], "yaw": r["yaw"],
                                          "sharpness": r["sharpness"]})} for r in rows]
    else:
        first = next(storage.parquet_file(storage.join(rep.outputs[0], parts[0], RECORDS)).iter_batches(64), None)
        rows = first.to_pylist() if first is not None else []  # the first 64 records: the report samples those
        blank = png(np.zeros((8, 8), np.uint8))
        records = [{**r, "mask_png": r["mask_png"] or blank} for r in rows]
    synth_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", n=n, seed=seed)
