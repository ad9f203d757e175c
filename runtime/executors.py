"""Two executors over the same stages (runtime/stage.py).

`LocalExecutor`: one process, items in order: tests, notebooks, the benchmark baseline.

`PrefectRayExecutor`: each stage is a Prefect subflow (plan, one task run per item, finalize), and each
item's work runs on Ray with the stage's declared resources: a Ray task for plain stages (Ray reuses its
worker processes), an actor per worker for model stages (weights loaded once in `setup`). At most
`orchestration.items_in_flight` items are submitted at once; every thread waits on its own object refs.

Both own the life cycle of a stage's items the same way, so a stage only computes:
- a stage whose marker exists and is current (its version: its settings and its inputs' markers) is not
  planned again (its report is read back); a stale marker is removed and the stage plans again;
- an item whose outputs exist (`item_done`) is not run again, on the driver and again on its worker;
- every worker (the local process, a Ray actor, a Ray worker process running Ray tasks) calls the stage's
  `setup()` once, before the first item it runs, never when all its items are done (`Worker`);
- each item is timed and its peak resident memory measured in the process that runs it (runtime/rss.py:
  the process's resident set before the item and its high-water mark during it), and the items' reports are summed into the stage report's `execution`.
Prefect's cache is keyed on the item's spec and served only while those outputs exist (runtime/cache.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from runtime.cache import call, fresh, gated
from runtime.rss import PeakRSS
from runtime.stage import Execution, ItemReport, Stage, StageReport, build

ITEM = dict(retries=2, retry_delay_seconds=[2, 10], persist_result=True)


def skipped(stage: Stage, k: int) -> ItemReport:
    return ItemReport(stage=stage.label, item=k, skipped=True)


class Worker:
    """One worker's hold on a stage: `setup()` before the first item it runs (again only after a setup that
    raised), items whose outputs exist skipped without `run`, each item timed. Not thread-safe: one per
    process or actor, which run one item at a time (the peak RSS is the process's own)."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.ready = False

    def run(self, k: int) -> ItemReport:
        stage = self.stage
        if stage.item_done(k):
            return skipped(stage, k)
        setup_s = None
        if not self.ready:
            t0 = time.perf_counter()
            stage.setup()
            self.ready = True
            setup_s = time.perf_counter() - t0
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            rep = stage.run(k)
            seconds = time.perf_counter() - t0
        return rep.model_copy(update={"seconds": seconds, "setup_seconds": setup_s,
                                      "rss_before_mb": mem.before_mb, "peak_rss_mb": mem.peak_mb})


class LocalExecutor:
    def __init__(self, progress: Callable[[Stage, int, int], None] | None = None):
        self.progress = progress  # (stage, items done, items) after each item

    def run(self, stage: Stage) -> StageReport:
        done = stage.report()
        if done is not None:
            return done
        stage.invalidate()
        n = stage.plan()
        worker = Worker(stage)  # this process is the stage's one worker
        items = []
        for k in range(n):
            items.append(worker.run(k))
            if self.progress:
                self.progress(stage, k + 1, n)
        return stage.finalize(n).model_copy(update={"execution": Execution.of(items)})

    def close(self) -> None:
        pass


# --- Ray side: where an item's work executes --------------------------------------------------------------

def _where() -> dict:
    """Which Ray node and worker ran an item, and what Ray gave it (shown in the item's result)."""
    import os

    import ray

    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "pid": os.getpid(), "resources": ctx.get_assigned_resources()}


_PROCESS_WORKERS: OrderedDict[str, Worker] = OrderedDict()
_KEEP_WORKERS = 4  # stage runs whose worker a Ray worker process keeps (set up) between its Ray tasks


def _run_item(spec: dict, k: int, run_id: str) -> dict:
    """A plain stage's item in a Ray worker process: Ray reuses the process for later Ray tasks, which find the
    stage built and set up for this run of it (`run_id`: one per RayWorkers)."""
    worker = _PROCESS_WORKERS.get(run_id)
    if worker is None:
        worker = _PROCESS_WORKERS[run_id] = Worker(build(spec))
        while len(_PROCESS_WORKERS) > _KEEP_WORKERS:
            _PROCESS_WORKERS.popitem(last=False)
    _PROCESS_WORKERS.move_to_end(run_id)
    return _placed(worker.run(k))


def _placed(rep: ItemReport) -> dict:
    where = _where()
    return {**rep.model_dump(), "node": where["node"], "worker": where}


class _StageActor:
    def __init__(self, spec: dict):
        self.worker = Worker(build(spec))

    def run(self, k: int) -> dict:
        return _placed(self.worker.run(k))


class RayWorkers:
    """The Ray workers of one stage: actors for a model stage, a remote function otherwise."""

    def __init__(self, stage: Stage, actors: int):
        import ray

        from runtime.ray_pool import ensure_ray

        ensure_ray()
        self.spec = stage.spec()
        self.run_id = uuid.uuid4().hex  # a worker process keeps a stage set up for this group only
        res = stage.worker_resources()
        opts: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus}
        if res.memory_mb:
            opts["memory"] = res.memory_mb * 2**20
        self.actors = [ray.remote(**opts)(_StageActor).remote(self.spec) for _ in range(actors)] if stage.model else []
        self.fn = None if stage.model else ray.remote(**opts)(_run_item)
        self._next = itertools.count()
        self._lock = threading.Lock()

    def run(self, k: int) -> dict:
        import ray

        if self.fn is not None:
            return ray.get(self.fn.remote(self.spec, k, self.run_id))
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
    with _GROUPS_LOCK:  # items run in threads: one worker group per stage
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

@task(name="plan", task_run_name="{label}-plan", **ITEM,
      cache_policy=gated(lambda i: build(i["spec"]).plan_outputs()))
def plan_task(spec: dict, label: str, version: str) -> int:
    """`version` (the stage's inputs and settings) is part of the cache key: grown inputs plan again."""
    return build(spec).plan()


@task(name="item", task_run_name="{label}", **ITEM,
      cache_policy=gated(lambda i: build(i["spec"]).item_outputs(i["k"])))
def item_task(spec: dict, k: int, label: str) -> dict:
    stage = build(spec)
    if stage.item_done(k):  # finished by an earlier run whose result Prefect did not keep: no Ray call
        return skipped(stage, k).model_dump()
    return _workers(spec).run(k)


@task(name="finalize", task_run_name="{label}-finalize", **ITEM,
      cache_policy=gated(lambda i: build(i["spec"]).final_outputs()))
def finalize_task(spec: dict, n: int, label: str, version: str) -> dict:
    return build(spec).finalize(n).model_dump()


def _run_items(stage: Stage, n: int, in_flight: int) -> list[ItemReport]:
    """One task run per item, at most `in_flight` submitted at a time, with a progress artifact; raises
    the first item error once its retries are spent. The items' reports, in item order."""
    spec = stage.spec()
    art = create_progress_artifact(0.0, description=f"{stage.label}: {n} items")
    todo = iter(range(n))
    pending: dict = {}

    def submit(k: int) -> None:
        args = (spec, k, stage.item_label(k))
        pending[fresh(item_task, *args).submit(*args)] = k

    for k in itertools.islice(todo, in_flight):
        submit(k)
    done = 0
    reports: dict[int, ItemReport] = {}
    while pending:
        finished = next(as_completed(list(pending)))
        k = pending.pop(finished)
        rep = ItemReport.model_validate(finished.result())
        if finished.state.name == "Cached":  # an earlier run's result: nothing ran now
            rep = ItemReport(stage=rep.stage, item=k, counts=rep.counts, skipped=True)
        reports[k] = rep
        done += 1
        update_progress_artifact(art, 100.0 * done / n)
        for k in itertools.islice(todo, 1):
            submit(k)
    return [reports[k] for k in sorted(reports)]


class PrefectRayExecutor:
    """Ray starts when a stage first has items to run, in the flow's own thread: a local Ray's processes die
    with the thread that started them, and Prefect's task threads end with each subflow."""

    def __init__(self, items_in_flight: int = 4, model_actors: int = 2):
        self.items_in_flight = items_in_flight
        self.model_actors = model_actors

    def run(self, stage: Stage) -> StageReport:
        done = stage.report()
        if done is not None:  # complete: no subflow, no item, nothing read but the marker
            return done
        stage.invalidate()  # a stale marker (grown inputs, changed settings): the stage runs again
        return flow(name=stage.label, log_prints=True, validate_parameters=False)(self._stage_flow)(stage.spec())

    def _stage_flow(self, spec: dict) -> StageReport:
        from runtime.ray_pool import ensure_ray

        stage = build(spec)
        version = stage.version()
        n = call(plan_task, spec, stage.label, version)
        if n:
            ensure_ray()
        if stage.model and n:
            _workers(spec, min(self.model_actors, n))
        items: list[ItemReport] = []
        try:
            if n:
                items = _run_items(stage, n, self.items_in_flight)
        finally:
            _close_workers(spec)  # actors hold models and CPUs: give them back before the next stage
        rep = StageReport.model_validate(call(finalize_task, spec, n, stage.label, version))
        return rep.model_copy(update={"execution": Execution.of(items)})

    def close(self) -> None:
        from runtime.ray_pool import stop_ray

        with _GROUPS_LOCK:
            groups = list(_GROUPS.values())
            _GROUPS.clear()
        for g in groups:
            g.close()
        stop_ray()
