"""The mining stage list in one process, without Prefect runs or Ray: the same stages, markers and outputs
as the `aceforge-mine` flow (flows/pipelines.py), run by the local executor. The baseline of
bench/orchestration_overhead.py, and handy in a notebook.
"""

from __future__ import annotations

from typing import Any

from flows.pipelines import run_mining as _run_mining
from schemas.config import RunConfig
from runtime.executors import LocalExecutor


def run_mining(cfg: RunConfig, source: str | None = None, writer: dict[str, Any] | None = None,
               shard_prefix: str = "mined") -> dict:
    """The summary `aceforge-mine` returns. `writer`: an instruction writer spec ({'kind': 'demo', 'corpus':
    ...}, {'kind': 'template'}, {'kind': 'chat' or 'local_vlm', ...}); None: the configured backend."""
    return _run_mining(LocalExecutor(), cfg, source, writer, shard_prefix)
