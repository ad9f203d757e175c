"""Peak resident memory of one item's `run(k)`, measured in the process that runs it (runtime/executors.py).

On Linux the kernel's high-water mark (VmHWM) is reset before the item (`5` into /proc/self/clear_refs, which
touches nothing else) and read after it: exact, no thread. Where the reset is refused, a daemon thread samples
VmRSS every `interval` seconds (a spike shorter than that can be missed). Without /proc the figures are None.
The process's resident set before the item is kept beside the peak: a worker process that ran earlier items
(Ray reuses them) starts above zero, and the item's own growth is `peak - before`.
"""

from __future__ import annotations

import os
import threading

_STATUS = "/proc/self/status"
_STATM = "/proc/self/statm"
_CLEAR_REFS = "/proc/self/clear_refs"
_PAGE_MB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) / 2**20


def _status_mb(field: str) -> float | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def current_mb() -> float | None:
    """This process's resident set now, in MiB (None without /proc)."""
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """`with PeakRSS() as m: ...` then `m.before_mb`, `m.peak_mb` (MiB; None where unmeasurable). One at a time
    per process: the high-water mark is the process's own."""

    def __init__(self, interval: float = 0.02, reset: bool = True):
        self.interval = interval
        self.reset = reset  # False: always sample (what a system that refuses the reset gets)
        self.before_mb: float | None = None
        self.peak_mb: float | None = None
        self._hwm = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: float | None = None

    def __enter__(self) -> PeakRSS:
        self.before_mb = self._seen = current_mb()
        if self.before_mb is None:
            return self
        self._hwm = self.reset and _reset_peak() and _status_mb("VmHWM") is not None
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._see(current_mb())

    def _see(self, mb: float | None) -> None:
        if mb is not None and (self._seen is None or mb > self._seen):
            self._seen = mb

    def __exit__(self, *exc) -> None:
        if self.before_mb is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._see(_status_mb("VmHWM") if self._hwm else None)
        self._see(current_mb())
        self.peak_mb = self._seen
