"""A Prefect cache policy gated on a task run's outputs: the markers decide, the cache only spares the call.

The key is inputs + Prefect task source. A cached result is served only while every output the task run
owns exists: `fresh(task, *args)` (how the flows call every plan, item and finalize) sets `refresh_cache`
when an output is missing, so the task runs and its result is stored under that same key, and the next run
finds it Cached. Called without `fresh`, a task run whose outputs are missing gets no key at all: never a
stale result.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from store import storage


@dataclass
class OutputsExist(CachePolicy):
    outputs: Callable[[dict[str, Any]], list[str]] = field(default=lambda inputs: [])
    inner: CachePolicy = field(default_factory=lambda: INPUTS + TASK_SOURCE)

    def complete(self, inputs: dict[str, Any]) -> bool:
        try:
            paths = self.outputs(inputs)
        except Exception:  # an output that cannot even be named is an output that does not exist
            return False
        return bool(paths) and all(storage.exists(p) for p in paths)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        refreshing = bool(getattr(getattr(task_ctx, "task", None), "refresh_cache", False))
        if not refreshing and not self.complete(inputs):
            return None
        return self.inner.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)


def gated(outputs: Callable[[dict[str, Any]], list[str]]) -> OutputsExist:
    return OutputsExist(outputs=outputs)


def fresh(task, *args: Any, **kwargs: Any):
    """The Prefect task `task`, set to overwrite its cache record when the outputs of this call are missing."""
    policy = task.cache_policy
    if not isinstance(policy, OutputsExist):
        return task
    bound = inspect.signature(task.fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return task if policy.complete(dict(bound.arguments)) else task.with_options(refresh_cache=True)


def call(task, *args: Any):
    """Run one Prefect task in the current flow; its cached result is used only while its outputs exist."""
    return fresh(task, *args)(*args)
