"""Deployments, a local Prefect server, and run status.

`deployments(...)` builds the two deployments prefect.yaml also declares: `aceforge-mine/mine` on a cron
schedule over a configured source (the schedule inactive unless asked: the deployment itself is never
paused, so `prefect deployment schedule resume` turns it on), and `aceforge-train/train`, triggered by
every `aceforge.shards.landed` event whose resource is `aceforge.shards.<prefix>` (the demo announces
`aceforge.demo.shards.<prefix>`, which deployed training ignores): one training run over every shard set of
the mining run (the event's `shard_uris`, passed as a list), under the event's root.

Entrypoints are module paths (`flows.pipelines.mine_flow`): a file path would put `flows/` first on
sys.path, where a module named like one of our packages would shadow it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.pipelines import LANDED_RESOURCE, SHARDS_LANDED, mine_flow, train_flow
from runtime.lifeline import run_child
from store.storage import absolute

MINE_CRON = "0 3 * * *"
POOL = "aceforge-local"
DEPLOYMENTS = ("aceforge-mine/mine", "aceforge-train/train")


# A list passes through an event trigger as JSON: the template renders the payload's list with `tojson`, and
# the `json` kind parses that text back into a list (a bare "{{ ... }}" would be a string on servers that do
# not upgrade single-expression templates themselves).
SHARD_URIS_PARAMETER = {"__prefect_kind": "json",
                        "value": {"__prefect_kind": "jinja", "template": "{{ event.payload.shard_uris | tojson }}"}}


def landed_trigger() -> DeploymentEventTrigger:
    """One training run per mining run that landed shards, over every shard set of that run, beside its shards:
    the event names the root it landed under."""
    return DeploymentEventTrigger(
        name="train-when-shards-land", expect={SHARDS_LANDED}, match={"prefect.resource.id": f"{LANDED_RESOURCE}.*"},
        parameters={"shard_uris": SHARD_URIS_PARAMETER, "root": "{{ event.payload.root }}"})


def deployments(source: str | None, root: str | None, config: dict | None = None, schedule_active: bool = False,
                cron: str = MINE_CRON):
    common: dict[str, Any] = dict(entrypoint_type=EntrypointType.MODULE_PATH)
    mine = mine_flow.to_deployment(
        name="mine", schedules=[Cron(cron, timezone="UTC", active=schedule_active)],
        parameters={"source": absolute(source), "root": absolute(root), "config": config or {}},
        description="Mine pairs from the configured source on a schedule", tags=["aceforge", "mining"], **common)
    train = train_flow.to_deployment(
        name="train", triggers=[landed_trigger()], parameters={"root": absolute(root), "config": config or {}},
        description="Fine-tune ACE++ when a mining run lands shards", tags=["aceforge", "training"], **common)
    return [mine, train]


def require_server() -> str:
    """Deployments live on a server every process can reach: a temporary one would die with this process."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError("no Prefect server configured: start one with `aceforge server` and "
                           "`export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    return url


def serve(source: str | None, root: str | None, config: dict | None = None, schedule_active: bool = False,
          cron: str = MINE_CRON) -> None:
    """Register both deployments and run their flow runs from this process (blocks; SIGTERM stops cleanly)."""
    from prefect import serve as prefect_serve

    def stop(signum, frame):  # let the runner cancel and reap its flow-run processes
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    prefect_serve(*deployments(source, root, config, schedule_active, cron))


async def _ensure_pool(client, name: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def apply_to_pool(source: str | None, root: str | None, config: dict | None = None, schedule_active: bool = False,
                  cron: str = MINE_CRON, pool: str = POOL) -> list[str]:
    """Create the process work pool if missing and register both deployments on it (their triggers too)."""
    import asyncio

    from prefect import get_client

    async def ensure() -> None:
        async with get_client() as client:
            await _ensure_pool(client, pool)

    asyncio.run(ensure())
    return [str(d.apply(work_pool_name=pool)) for d in deployments(source, root, config, schedule_active, cron)]


def worker_command(pool: str = POOL) -> list[str]:
    return [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool, "--type", "process"]


def undeploy() -> list[str]:
    """Delete both deployments and the automations their triggers created (Prefect keeps those otherwise)."""
    import asyncio

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async def go() -> list[str]:
        gone = []
        async with get_client() as client:
            for name in DEPLOYMENTS:
                try:
                    d = await client.read_deployment_by_name(name)
                except ObjectNotFound:
                    continue
                await client.delete_resource_owned_automations(f"prefect.deployment.{d.id}")
                await client.delete_deployment(d.id)
                gone.append(name)
        return gone

    return asyncio.run(go())


def server_command(host: str = "127.0.0.1", port: int = 4200, database_url: str | None = None) -> tuple[list[str], dict]:
    """The `prefect server start` command line and environment (SQLite under PREFECT_HOME by default); the
    UI is told the API's real address, so a port other than 4200 works."""
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PREFECT_UI_API_URL"] = f"http://{host}:{port}/api"
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    cmd = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", host, "--port", str(port)]
    return cmd, env


def run_server(host: str, port: int, database_url: str | None) -> int:
    cmd, env = server_command(host, port, database_url)
    return run_child(cmd, env)


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
