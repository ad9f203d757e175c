"""Two executors over the same stages (tasks/stage.py).

`LocalExecutor`: one process, units in order: tests, notebooks, the benchmark baseline.

`PrefectRayExecutor`: each stage is a Prefect subflow (plan, one task run per unit, finalize), and each
unit's work runs on Ray with the stage's declared resources: a Ray task for plain stages (Ray reuses its
worker processes), an actor per worker for model stages (weights loaded once in `setup`). At most
`orchestration.units_in_flight` units are submitted at once; every thread waits on its own object refs.

Both decide "done" the same way: a stage whose marker exists and is current (its version: its settings
and its inputs' markers) is not planned again (its report is read back); a stale marker is removed and
the stage plans again; a unit whose outputs exist is not run again. Prefect's cache is keyed on the
unit's spec and served only while those outputs exist (tasks/cache.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from typing import Any, Callable

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from tasks.cache import call, fresh, gated
from tasks.stage import Stage, StageReport, UnitReport, build

UNIT = dict(retries=2, retry_delay_seconds=[2, 10], persist_result=True)


class LocalExecutor:
    def __init__(self, progress: Callable[[Stage, int, int], None] | None = None):
        self.progress = progress  # (stage, units done, units) after each unit

    def run(self, stage: Stage) -> StageReport:
        done = stage.report()
        if done is not None:
            return done
        stage.invalidate()
        n = stage.plan()
        ready = False
        for k in range(n):
            if not stage.unit_done(k):
                if not ready:
                    stage.setup()
                    ready = True
                stage.run(k)
            if self.progress:
                self.progress(stage, k + 1, n)
        return stage.finalize(n)

    def close(self) -> None:
        pass


# --- Ray side: where a unit's work executes --------------------------------------------------------------

def _where() -> dict:
    """Which Ray node and worker ran a unit, and what Ray gave it (shown in the unit's result)."""
    import os

    import ray

    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "pid": os.getpid(), "resources": ctx.get_assigned_resources()}


def _run_unit(spec: dict, k: int) -> dict:
    return {**build(spec).run(k).model_dump(), "worker": _where()}


class _StageActor:
    def __init__(self, spec: dict):
        self.stage = build(spec)
        self.stage.setup()

    def run(self, k: int) -> dict:
        return {**self.stage.run(k).model_dump(), "worker": _where()}


class RayWorkers:
    """The Ray workers of one stage: actors for a model stage, a remote function otherwise."""

    def __init__(self, stage: Stage, actors: int):
        import ray

        from tasks.ray_pool import ensure_ray

        ensure_ray()
        self.spec = stage.spec()
        res = stage.worker_resources()
        opts: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus}
        if res.memory_mb:
            opts["memory"] = res.memory_mb * 2**20
        self.actors = [ray.remote(**opts)(_StageActor).remote(self.spec) for _ in range(actors)] if stage.model else []
        self.fn = None if stage.model else ray.remote(**opts)(_run_unit)
        self._next = itertools.count()
        self._lock = threading.Lock()

    def run(self, k: int) -> dict:
        import ray

        if self.fn is not None:
            return ray.get(self.fn.remote(self.spec, k))
        with self._lock:
            actor = self.actors[next(self._next) % len(self.actors)]
        return ray.get(actor.run.remote(k))

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


_GROUPS: dict[str, RayWorkers] = {}
_GROUPS_LOCK = threading.Lock()


def _key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _workers(spec: dict, actors: int = 1) -> RayWorkers:
    with _GROUPS_LOCK:  # units run in threads: one worker group per stage
        key = _key(spec)
        if key not in _GROUPS:
            _GROUPS[key] = RayWorkers(build(spec), actors)
        return _GROUPS[key]


def _close_workers(spec: dict) -> None:
    with _GROUPS_LOCK:
        group = _GROUPS.pop(_key(spec), None)
    if group is not None:
        group.close()


# --- Prefect side: what the UI shows ---------------------------------------------------------------------

@task(name="plan", task_run_name="{label}-plan", **UNIT,
      cache_policy=gated(lambda i: build(i["spec"]).plan_outputs()))
def plan_task(spec: dict, label: str, version: str) -> int:
    """`version` (the stage's inputs and settings) is part of the cache key: grown inputs plan again."""
    return build(spec).plan()


@task(name="unit", task_run_name="{label}", **UNIT,
      cache_policy=gated(lambda i: build(i["spec"]).unit_outputs(i["k"])))
def unit_task(spec: dict, k: int, label: str) -> dict:
    stage = build(spec)
    if stage.unit_done(k):  # finished by an earlier run whose result Prefect did not keep
        return UnitReport(stage=stage.label, unit=k, counts={"skipped_existing": 1}).model_dump()
    return _workers(spec).run(k)


@task(name="finalize", task_run_name="{label}-finalize", **UNIT,
      cache_policy=gated(lambda i: build(i["spec"]).final_outputs()))
def finalize_task(spec: dict, n: int, label: str, version: str) -> dict:
    return build(spec).finalize(n).model_dump()


def _run_units(stage: Stage, n: int, in_flight: int) -> None:
    """One task run per unit, at most `in_flight` submitted at a time, with a progress artifact; raises
    the first unit error once its retries are spent."""
    spec = stage.spec()
    art = create_progress_artifact(0.0, description=f"{stage.label}: {n} units")
    todo = iter(range(n))
    pending: dict = {}

    def submit(k: int) -> None:
        args = (spec, k, stage.unit_label(k))
        pending[fresh(unit_task, *args).submit(*args)] = k

    for k in itertools.islice(todo, in_flight):
        submit(k)
    done = 0
    while pending:
        finished = next(as_completed(list(pending)))
        pending.pop(finished)
        finished.result()
        done += 1
        update_progress_artifact(art, 100.0 * done / n)
        for k in itertools.islice(todo, 1):
            submit(k)


class PrefectRayExecutor:
    """Ray starts when a stage first has units to run, in the flow's own thread: a local Ray's processes die
    with the thread that started them, and Prefect's task threads end with each subflow."""

    def __init__(self, units_in_flight: int = 4, model_actors: int = 2):
        self.units_in_flight = units_in_flight
        self.model_actors = model_actors

    def run(self, stage: Stage) -> StageReport:
        done = stage.report()
        if done is not None:  # complete: no subflow, no unit, nothing read but the marker
            return done
        stage.invalidate()  # a stale marker (grown inputs, changed settings): the stage runs again
        return flow(name=stage.label, log_prints=True, validate_parameters=False)(self._stage_flow)(stage.spec())

    def _stage_flow(self, spec: dict) -> StageReport:
        from tasks.ray_pool import ensure_ray

        stage = build(spec)
        version = stage.version()
        n = call(plan_task, spec, stage.label, version)
        if n:
            ensure_ray()
        if stage.model and n:
            _workers(spec, min(self.model_actors, n))
        try:
            if n:
                _run_units(stage, n, self.units_in_flight)
        finally:
            _close_workers(spec)  # actors hold models and CPUs: give them back before the next stage
        return StageReport.model_validate(call(finalize_task, spec, n, stage.label, version))

    def close(self) -> None:
        from tasks.ray_pool import stop_ray

        with _GROUPS_LOCK:
            groups = list(_GROUPS.values())
            _GROUPS.clear()
        for g in groups:
            g.close()
        stop_ray()
