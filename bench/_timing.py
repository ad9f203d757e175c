"""Interleaved timing for benchmarks that compare sides (ours against a baseline) on a shared machine.

Sides run in turn, A B A B ... for `rounds` rounds, so load that comes and goes hits every side alike; each
side keeps every time. The figure to compare is the best (least disturbed) run of each side, and the ratio is
the ratio of bests; the median shows how noisy the runs were.

    from bench._timing import Side, interleave, report
    t = interleave([Side("baseline", base_fn), Side("ours", our_fn)], rounds=5)
    print("\n".join(report(t, baseline="baseline")))

A side's `setup` (untimed) runs before each of its runs and its value is passed to `run` (a fresh output
folder, say). A side that times itself (in a child process) returns `Measured(seconds, result)`; its
seconds are taken instead of the clock's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Measured:
    seconds: float
    result: Any = None


@dataclass(frozen=True)
class Side:
    name: str
    run: Callable[..., Any]
    setup: Callable[[], Any] | None = None


@dataclass
class Timings:
    name: str
    seconds: list[float] = field(default_factory=list)
    result: Any = None  # the last run's return value

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def interleave(sides: Sequence[Side | tuple[str, Callable[..., Any]]], rounds: int = 3, warmup: int = 0,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, Timings]:
    """Run every side once per round, in the order given, for `warmup` untimed rounds then `rounds` timed
    ones; return each side's times by name (in the order given)."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got rounds={rounds} warmup={warmup}")
    sides = [s if isinstance(s, Side) else Side(*s) for s in sides]
    names = [s.name for s in sides]
    if len(set(names)) != len(names):
        raise ValueError(f"side names must be distinct, got {names}")
    out = {s.name: Timings(s.name) for s in sides}
    for r in range(warmup + rounds):
        for s in sides:
            args = (s.setup(),) if s.setup is not None else ()
            t0 = clock()
            value = s.run(*args)
            dt = clock() - t0
            if isinstance(value, Measured):
                dt, value = value.seconds, value.result
            if r >= warmup:
                out[s.name].seconds.append(dt)
                out[s.name].result = value
    return out


def ratio(timings: dict[str, Timings], side: str, baseline: str) -> float:
    """best(side) / best(baseline): above 1, `side` is slower."""
    return timings[side].best / timings[baseline].best


def report(timings: dict[str, Timings], baseline: str | None = None, width: int = 36,
           labels: dict[str, str] | None = None) -> list[str]:
    """One line per side (best, median, runs); with `baseline`, each other side's ratio of bests to it."""
    labels = labels or {}
    lines = []
    for name, t in timings.items():
        line = (f"{labels.get(name, name):<{width}} best {t.best:8.3f} s   median {t.median:8.3f} s   "
                f"({len(t.seconds)} runs)")
        if baseline is not None and name != baseline:
            line += f"   {ratio(timings, name, baseline):.2f}x the baseline's best"
        lines.append(line)
    return lines
