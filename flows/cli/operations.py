"""Operations: the Prefect server, deployments and the runs they made."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, _config_and_data, _fail, app, out


@app.command()
def server(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(4200),
           database_url: Optional[str] = typer.Option(None, help="e.g. postgresql+asyncpg://user:pw@host/db; "
                                                                  "default SQLite under PREFECT_HOME")) -> None:
    """Start a local Prefect server with the UI (http://HOST:PORT); point runs at it with PREFECT_API_URL."""
    from flows.deploy import run_server

    out.print(f"Prefect UI and API on http://{host}:{port} (export PREFECT_API_URL=http://{host}:{port}/api)")
    raise typer.Exit(run_server(host, port, database_url))


@app.command()
def deploy(source: Optional[str] = typer.Option(None, help="what the scheduled mining deployment ingests"),
           root: Optional[str] = typer.Option(None, help="output root of both deployments (made absolute)"),
           config: Optional[Path] = ConfigOpt,
           schedule: bool = typer.Option(False, help="activate the mining schedule (inactive by default)"),
           cron: str = typer.Option("0 3 * * *", help="the mining schedule (UTC)"),
           worker: bool = typer.Option(False, help="register on the process work pool and start a worker there "
                                                    "instead of serving from this process"),
           pool: str = typer.Option("aceforge-local", help="work pool of --worker (created if missing)")) -> None:
    """Register the mining (cron) and training (triggered by aceforge.shards.landed) deployments and run them."""
    from flows import deploy as dep

    cfg, params = _config_and_data(config, root=root)
    params = params or None
    try:
        dep.require_server()
    except RuntimeError as e:
        _fail("deploy:", e, 2)
    where = f"root {dep.absolute(cfg.root)}, source {dep.absolute(source)}, schedule '{cron}' " + \
        ("active" if schedule else "inactive (prefect deployment schedule resume aceforge-mine/mine <id>)")
    if worker:
        dep.apply_to_pool(source, cfg.root, params, schedule, cron, pool)
        out.print(f"registered aceforge-mine/mine and aceforge-train/train on pool {pool} ({where}); "
                  "starting a process worker; Ctrl-C or SIGTERM stops it")
        raise typer.Exit(dep.run_child(dep.worker_command(pool)))
    out.print(f"serving aceforge-mine/mine and aceforge-train/train (trigger: aceforge.shards.landed) ({where}); "
              "Ctrl-C or SIGTERM stops")
    dep.serve(source, cfg.root, params, schedule, cron)


@app.command()
def undeploy() -> None:
    """Delete both deployments and the automations of their triggers."""
    from flows.deploy import undeploy as run_undeploy

    gone = run_undeploy()
    out.print("deleted: " + (", ".join(gone) if gone else "nothing (no aceforge deployments)"))


@app.command()
def status(limit: int = typer.Option(10, help="how many runs")) -> None:
    """The latest flow runs: state, task runs by state, parameters."""
    import asyncio

    from flows.deploy import latest_runs

    try:
        runs = asyncio.run(latest_runs(limit))
    except Exception as e:  # no server reachable, or an API error: say so plainly
        out.print(f"[red]cannot read runs:[/red] {type(e).__name__}: {e} (is PREFECT_API_URL set to a running server?)")
        raise typer.Exit(1) from None
    for r in runs:  # one line per run: the parameters that say what it worked on
        params = " ".join(f"{k}={v}" for k, v in r["parameters"].items()
                          if k in ("source", "shard_uri", "root", "out") and v)
        tasks = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["tasks"].items())) or "no task runs"
        out.print(f"{r['start']}  {r['flow']:<18} {r['run']:<24} {r['state']:<10} tasks: {tasks}  {params}")
