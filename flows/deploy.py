"""Deployments, a local Prefect server, and run status.

`deployments(...)` builds the same two deployments prefect.yaml declares: `aceforge-mine/mine` on a cron
schedule over a configured source (paused unless asked), and `aceforge-train/train`, triggered by every
`aceforge.shards.landed` event with the event's shard URI as its parameter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect.events import DeploymentEventTrigger

from flows.pipelines import mine_flow, train_flow
from tasks.units import SHARDS_LANDED

MINE_CRON = "0 3 * * *"


def landed_trigger(root: str | None) -> DeploymentEventTrigger:
    params: dict[str, Any] = {"shard_uri": "{{ event.payload.shard_uri }}"}
    if root is not None:
        params["root"] = root
    return DeploymentEventTrigger(name="train-when-shards-land", expect={SHARDS_LANDED}, parameters=params)


def deployments(source: str | None, root: str | None, config: dict | None = None, schedule_active: bool = False,
                cron: str = MINE_CRON):
    mine = mine_flow.to_deployment(
        name="mine", cron=cron, paused=not schedule_active,
        parameters={"source": source, "root": root, "config": config or {}},
        description="Mine pairs from the configured source on a schedule", tags=["aceforge", "mining"])
    train = train_flow.to_deployment(
        name="train", triggers=[landed_trigger(root)], parameters={"root": root, "config": config or {}},
        description="Fine-tune ACE++ when a shard set lands", tags=["aceforge", "training"])
    return [mine, train]


def serve(source: str | None, root: str | None, config: dict | None = None, schedule_active: bool = False) -> None:
    """Register both deployments and run them from this process (blocks)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(source, root, config, schedule_active))


def server_command(host: str = "127.0.0.1", port: int = 4200, database_url: str | None = None) -> tuple[list[str], dict]:
    """The `prefect server start` command line and environment (SQLite under PREFECT_HOME by default)."""
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    cmd = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", host, "--port", str(port)]
    return cmd, env


def run_server(host: str, port: int, database_url: str | None) -> int:
    cmd, env = server_command(host, port, database_url)
    return subprocess.call(cmd, env=env)


async def latest_runs(limit: int = 10) -> list[dict]:
    """The newest flow runs with their state, and each run's task-run counts by state."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=limit)
        flows = {f.id: f.name for f in await client.read_flows(limit=200)}
        out = []
        for r in runs:
            tasks = await client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[r.id])))
            states: dict[str, int] = {}
            for t in tasks:
                name = t.state.name if t.state else "unknown"
                states[name] = states.get(name, 0) + 1
            out.append({"flow": flows.get(r.flow_id, str(r.flow_id)), "run": r.name, "id": str(r.id),
                        "state": r.state.name if r.state else "unknown",
                        "start": r.start_time.isoformat(timespec="seconds") if r.start_time else "",
                        "parameters": r.parameters, "tasks": states})
        return out
