"""What each stage shows in the UI and on the command line, read from the registry (stages/registry.py).

UI: a stage's `ui_report` names its report in REPORTS (counts tables, thumbnails of sampled records, band
histograms, and for a pack stage the shard set landed by the run); every stage whose items ran shows what the
executor saw of them (`execution_rows`: items, seconds, peak RSS per item). Command line: `summary_lines` calls each
registered stage's `summary` on its counts in a run's summary.
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any, Callable

import numpy as np

from flows.artifacts import band_histogram, counts_table, pair_report, report_link, synth_report
from schemas.config import RunConfig
from schemas.layout import ShardFiles
from stages import registry
from store import storage
from runtime.stage import Execution, Stage, StageReport
from stages.synthesis.parts import RECORDS, png


class ReportContext:
    """What a run's reports share: its config, the shard sets it packed (for the one landed event) and the
    catalog (read once, for the pair reports)."""

    def __init__(self, cfg: RunConfig, landed: list[dict]):
        self.cfg, self.landed = cfg, landed
        self.catalog: dict = {}


Report = Callable[[ReportContext, Stage, StageReport, bool], None]
REPORT_PAIRS = 20_000  # the pairs a preset's report samples from (its first batches): memory bounded
REPORT_RECORDS = 16  # the records (with their images) a synthesis report samples from: the first of its first part


def _flat(prefix: str, d: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(f"{prefix}{k}: ", v) if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _counts(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    counts_table(stage.label, _flat("", rep.counts), f"{stage.label}-counts")


def _landed(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    """A packed shard set: into the run's landed event, and a table of what the supervision gate dropped."""
    c, name = rep.counts, stage.params["shard_name"]
    ctx.landed.append({"name": name, "uri": storage.absolute(c["uri"]),
                       "manifest": storage.absolute(ShardFiles(c["uri"]).manifest),
                       "samples": c["samples"], "shards": c["shards"], "counts_by_task": c["counts_by_task"],
                       "landed_now": ran_now})
    counts_table(f"shard set: {name}", {"samples": c["samples"], "shards": c["shards"],
                                        "kept shards (unchanged)": c.get("kept_shards", 0),
                                        "MiB": round(c.get("bytes", 0) / 2**20, 1),
                                        **{f"samples: {t}": n for t, n in c["counts_by_task"].items()}},
                 f"shards-{name}")  # every pack stage's counts
    counts_table(f"supervision: {name}",  # samples dropped by the gate, per task
                 {f"{t}: {r}": n for t, rs in (c.get("supervision_dropped") or {}).items() for r, n in rs.items()}
                 or {"dropped": 0}, f"supervision-{name}")
    report = ShardFiles(c["uri"]).report
    if storage.exists(report):
        report_link(name, report, f"report-{name}")


def _synth_landed(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    _landed(ctx, stage, rep, ran_now)
    _counts(ctx, stage, rep, ran_now)


def _ingest(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    c = rep.counts
    counts_table("ingest", {"seen": c["seen"], "accepted": c["accepted"], "duplicates": c["duplicates"],
                            **{f"quarantined: {r}": n for r, n in c["quarantined"].items()},
                            **{f"not read: {r}": n for r, n in (c.get("skipped") or {}).items()}},
                 "ingest-counts")


def _embed(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    c = rep.counts
    counts_table("embeddings", {"images": c["images"], "embedded": c["embedded"],
                                **{f"skipped: {r}": n for r, n in (c["skipped"] or {}).items()}}, "embed-counts")


def _pairs(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    c, name = rep.counts, stage.params["preset"]
    counts_table(f"pairs: {name}", {"clusters": c["clusters"], "band edges": c["edges"], "sets": c["sets"],
                                    "pairs": c["pairs"], "groups (series / reference)": c.get("groups", 0),
                                    **{f"dropped: {r}": n for r, n in c["drops"].items()}},
                 f"pairs-{name}")
    band_histogram(rep.outputs[0], tuple(c["band"]), f"band similarities: {name}", f"band-{name}")


def _instructions(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    from stages.corpus.ingest import load_catalog
    from stages.pairs.instruct import iter_instructed

    name = stage.params["preset"]
    counts_table(f"instructions: {name}", {k: v for k, v in rep.counts.items() if k != "writer"},
                 f"instructions-{name}")
    if not ctx.catalog:
        ctx.catalog.update({r.id: r for r in load_catalog(ctx.cfg.root)})
    pair_report(list(islice(iter_instructed(rep.outputs[0]), REPORT_PAIRS)), ctx.catalog, f"sampled pairs: {name}", f"pairs-report-{name}",
                seed=ctx.cfg.mining.seed)


def _first_part(rep: StageReport) -> str | None:
    parts = (storage.read_marker(rep.outputs[0]) or {}).get("parts") or []
    return storage.join(rep.outputs[0], parts[0]) if parts else None


def _head(uri: str, n: int = REPORT_RECORDS) -> list[dict]:
    """The first `n` rows of a parquet file (its first row groups only): a report samples from these, so the
    flow process never reads a part's every image."""
    import pyarrow as pa

    first = next(storage.parquet_file(uri).iter_batches(batch_size=n), None)
    rows = first.to_pylist() if first is not None else []
    del first
    pa.default_memory_pool().release_unused()  # the batch's buffers back to the system, not kept by the pool
    return rows


def _records(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    """Sampled records of the stage's first part, with thumbnails."""
    _counts(ctx, stage, rep, ran_now)
    part = _first_part(rep)
    records = _head(storage.join(part, RECORDS)) if part else []
    synth_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", seed=ctx.cfg.synthesis.seed)


def _maps(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    """One record per map kind, both directions."""
    from flows.maps_report import maps_report

    _counts(ctx, stage, rep, ran_now)
    maps_report(rep.outputs[0], f"condition maps and restoration: {stage.label}", f"{stage.label}-report")


def _faces(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool, n: int = 8) -> None:
    """Aligned chips of the kept faces."""
    from stages.synthesis.faces import FACES

    _counts(ctx, stage, rep, ran_now)
    part = _first_part(rep)
    if part is None:
        return
    rows = _head(storage.join(part, FACES))
    records = [{"edit_png": r["image_png"], "mask_png": r["chip_png"], "target_png": r["chip_png"],
                "instructions": json.dumps({"face": r["source_id"][:12]}), "generators": json.dumps([]),
                "scores": json.dumps({"score": r["score"], "roll_deg": r["roll_deg"], "yaw": r["yaw"],
                                      "sharpness": r["sharpness"]})} for r in rows]
    synth_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", n=n, seed=ctx.cfg.synthesis.seed)


def _face_pairs(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool, n: int = 8) -> None:
    """Sampled face pair records (of the first REPORT_RECORDS)."""
    _counts(ctx, stage, rep, ran_now)
    part = _first_part(rep)
    if part is None:
        return
    rows = _head(storage.join(part, RECORDS))
    blank = png(np.zeros((8, 8), np.uint8))
    records = [{**r, "mask_png": r["mask_png"] or blank} for r in rows]
    synth_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", n=n, seed=ctx.cfg.synthesis.seed)


def _chains(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    from flows.chain_synthesis import chain_report
    from stages.synthesis.chain_records import iter_chain_records

    _counts(ctx, stage, rep, ran_now)
    records = list(islice(iter_chain_records(rep.outputs[0]), REPORT_RECORDS))
    chain_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", seed=ctx.cfg.synthesis.seed)


REPORTS: dict[str, Report] = {
    "ingest": _ingest, "embed": _embed, "pairs": _pairs, "instructions": _instructions, "landed": _landed,
    "counts": _counts, "records": _records, "maps": _maps, "faces": _faces, "face_pairs": _face_pairs,
    "chains": _chains, "synth_landed": _synth_landed,
}


def execution_rows(ex: Execution) -> dict[str, Any]:
    """What the executor saw of a stage's items, as table rows."""
    return {"items": ex.items, "ran": ex.ran, "skipped": ex.skipped, "seconds (items, summed)": round(ex.seconds, 2),
            "slowest item (s)": round(ex.slowest, 2), "worker setups": ex.setups,
            "setup seconds": round(ex.setup_seconds, 2), "peak RSS of one item (MiB)": round(ex.peak_rss_mb, 1),
            "largest growth of one item (MiB)": round(ex.rss_growth_mb, 1), "Ray nodes": ex.nodes}


def announce_stage(ctx: ReportContext, stage: Stage, rep: StageReport, ran_now: bool) -> None:
    """The UI report the stage declares (none for a stage whose `ui_report` is None), and its execution
    figures when items ran."""
    if stage.ui_report is not None:
        REPORTS[stage.ui_report](ctx, stage, rep, ran_now)
    if rep.execution is not None and rep.execution.ran:
        counts_table(f"execution: {stage.label}", execution_rows(rep.execution), f"{stage.label}-execution")


def summary_lines(summary: dict) -> list[str]:
    """A run's summary (run_mining's) on the command line: each registered stage's `summary` of its counts,
    per preset, then the synthesis stages, in registry order."""
    lines: list[str] = []
    for scope, groups in (("preset", [(k, v) for k, v in summary.items() if isinstance(v, dict) and "mined" in v]),
                          ("synthesis", [("synthesis", summary["synthesis"])] if summary.get("synthesis") else [])):
        for name, group in groups:
            for cls in registry.STAGES:
                if cls.scope == scope and cls.key in group:
                    line = cls.summary(group[cls.key], group, name)
                    if line:
                        lines.append(line)
    return lines
