"""Many endpoint calls at once: a fixed number in flight, an optional rate limit, results in input order.

A served model answers one request in a fixed latency whatever else it serves, so the throughput of a
client is the number of requests it keeps in flight over that latency. The items are taken from their
iterator a bounded window ahead of the result being handed back, so memory is bounded by the window (two
images per item), not by the number of items.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class RateLimiter:
    """At most `per_second` request starts a second, spaced evenly (0: no limit); shared by threads."""

    def __init__(self, per_second: float = 0.0):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, deadline: float | None = None) -> bool:
        """Blocks until the next start slot; False, taking no slot, when that slot is at or past `deadline`
        (a time.monotonic() value)."""
        if not self.interval:
            return True
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            if deadline is not None and slot >= deadline:
                return False
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)
        return True


def ordered_map(fn: Callable[[T], R], items: Iterable[T], in_flight: int, ahead: int | None = None) -> Iterator[R]:
    """fn(item) for each item, `in_flight` calls at a time in threads, yielded in input order. At most
    `ahead` items (default 2 * in_flight) are submitted and not yet yielded. `fn` should return its failures
    rather than raise: an exception is raised here, in order, and ends the map. Leaving the iterator early
    cancels the calls not started and waits for those running (each bounded by its own deadline)."""
    in_flight = max(1, in_flight)
    ahead = max(in_flight, ahead or 2 * in_flight)
    if in_flight == 1:  # no thread: the caller's own, in order
        for item in items:
            yield fn(item)
        return
    pool = ThreadPoolExecutor(in_flight, thread_name_prefix="instructions")
    window: deque[Future] = deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= ahead:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
