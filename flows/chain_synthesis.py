"""The style and chain stages of the `synthesize` group: style pairs, long-context and multi-turn chains, and
their shard set `<prefix>-<synthesis.shard_name>-chains`; counts tables and thumbnails in the UI."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any, Callable

import numpy as np
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import _thumb_bytes, artifact_key, counts_table
from schemas.config import STYLE_AND_CHAIN_TASKS, RunConfig
from tasks.chain_pack import ChainPackStage, chain_stages
from tasks.chain_records import iter_chain_records
from tasks.stage import Stage, StageReport
from tasks.synth_chains import LongContextStage, MultiTurnStage
from tasks.synth_style import StyleStage


def chain_shard_name(cfg: RunConfig, shard_prefix: str) -> str:
    return f"{shard_prefix}-{cfg.synthesis.shard_name}-chains"


def run_chain_synthesis(run: Callable[[Stage], StageReport], cfg: RunConfig, shard_prefix: str,
                        ran_now: dict[str, bool]) -> dict[str, Any]:
    """Runs after the object removals (long_context chains them) and the instructed pairs (multi_turn)."""
    if not any(t in STYLE_AND_CHAIN_TASKS for t in cfg.synthesis.tasks):
        return {}
    out: dict[str, Any] = {}
    for stage in chain_stages(cfg):
        out[stage.name.removeprefix("synth-").replace("-", "_")] = run(stage).counts
    pack = ChainPackStage(cfg, shard_name=chain_shard_name(cfg, shard_prefix))
    out["chain_shards"] = {**run(pack).counts, "landed_now": ran_now[pack.label]}
    return out


def chain_report(records: list[dict], title: str, key: str, n: int = 6, seed: int = 0) -> None:
    """Sampled records: every input (role), the target, the instructions, scores and generators."""
    if not records:
        create_markdown_artifact(f"## {title}\n\nNo samples.", key=artifact_key(key), description=title)
        return
    pick = sorted(np.random.default_rng(seed).choice(len(records), min(n, len(records)), replace=False).tolist())
    lines = [f"## {title}", "", f"{len(pick)} of the first {len(records)} records, sampled with seed {seed}.", "",
             "| inputs | target | instructions | scores | made by |", "|---|---|---|---|---|"]
    for i in pick:
        r = records[i]
        ins = "<br>".join(f"{t}: {v}" for t, v in json.loads(r["instructions"]).items()).replace("|", "\\|")
        scores = ", ".join(f"{k} {v:.3f}" for k, v in json.loads(r["scores"]).items())
        gens = ", ".join(f"{a}:{b}" for a, b in json.loads(r["generators"]))
        inputs = " ".join(f"![{role}]({_thumb_bytes(im)})" for im, role in zip(r["inputs"], r["roles"]))
        lines.append(f"| {inputs} | ![target]({_thumb_bytes(r['target_png'])}) | {ins} | {scores} | {gens} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key(key), description=title)


def _flat(prefix: str, d: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(f"{prefix}{k}: ", v) if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def announce_chain_synthesis(cfg: RunConfig, stage: Stage, rep: StageReport) -> bool:
    """Count tables (drops by reason) and sampled records; False for a stage not of this group."""
    if not isinstance(stage, (StyleStage, LongContextStage, MultiTurnStage, ChainPackStage)):
        return False
    counts_table(stage.label, _flat("", rep.counts), f"{stage.label}-counts")
    if not isinstance(stage, ChainPackStage):
        records = list(islice(iter_chain_records(rep.outputs[0]), 64))
        chain_report(records, f"sampled records: {stage.label}", f"{stage.label}-report", seed=cfg.synthesis.seed)
    return True
