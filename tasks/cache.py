"""A Prefect cache policy gated on the unit's outputs: the markers decide, the cache only spares the call.

The key is inputs + task source, but only while every output the unit owns exists; with an output gone
(deleted, or never written) there is no key, so the task runs again instead of returning a stale result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from tasks import storage


@dataclass
class OutputsExist(CachePolicy):
    outputs: Callable[[dict[str, Any]], list[str]] = field(default=lambda inputs: [])
    inner: CachePolicy = field(default_factory=lambda: INPUTS + TASK_SOURCE)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        try:
            paths = self.outputs(inputs)
        except Exception:  # an output that cannot even be named is an output that does not exist
            return None
        if not paths or not all(storage.exists(p) for p in paths):
            return None
        return self.inner.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)


def gated(outputs: Callable[[dict[str, Any]], list[str]]) -> OutputsExist:
    return OutputsExist(outputs=outputs)
