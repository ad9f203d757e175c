"""The style and chain stages of the `synthesize` group: style pairs, long-context and multi-turn chains, and
their shard set `<prefix>-<synthesis.shard_name>-chains`; counts tables and thumbnails in the UI."""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import artifact_key, strip, wrap
from schemas.config import RunConfig
from runtime.stage import Stage, StageReport


def run_chain_synthesis(run: Callable[[Stage], StageReport], cfg: RunConfig, shard_prefix: str,
                        ran_now: dict[str, bool]) -> dict[str, Any]:
    """The chain shard set's producers and pack only (after the object removals and the instructed pairs
    they read)."""
    from flows.synthesis import run_synthesis

    return run_synthesis(run, cfg, shard_prefix, ran_now, shard_sets=("chains",))


def chain_report(records: list[dict], title: str, key: str, n: int = 6, seed: int = 0) -> None:
    """Sampled records: every input (role), the target, the instructions, scores and generators."""
    if not records:
        create_markdown_artifact(f"## {title}\n\nNo samples.", key=artifact_key(key), description=title)
        return
    pick = sorted(np.random.default_rng(seed).choice(len(records), min(n, len(records)), replace=False).tolist())
    lines = [f"## {title}", "", f"{len(pick)} of the first {len(records)} records, sampled with seed {seed}.", "",
             "| inputs, target | instructions; scores; made by |", "|---|---|"]
    for i in pick:
        r = records[i]
        ins = "<br>".join(wrap(f"{t}: {v}") for t, v in json.loads(r["instructions"]).items())
        scores = ", ".join(f"{k} {v:.3f}" for k, v in json.loads(r["scores"]).items())
        gens = ", ".join(f"{a}:{b}" for a, b in json.loads(r["generators"]))
        roles = ", ".join(r["roles"])
        lines.append(f"| ![{roles}, target]({strip(*r['inputs'], r['target_png'])}) | inputs: {wrap(roles)}<br>{ins}"
                     f"<br>*{wrap(scores)}*<br>{wrap(gens)} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key(key), description=title)
