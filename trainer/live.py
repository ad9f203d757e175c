"""The live progress file of a training run: what a watcher (the Prefect UI publisher) follows while Ray trains.

Rank 0 rewrites <run>/live.json every `ui_every` steps, at checkpoints and at the end: the step, the step
goal, the last RECENT metric records and the last EVALS checkpoint evaluations. One small file read per poll,
whatever the length of the run or the store (s3:// included); a watcher that polls slower than the steps
still sees the recent ones.
"""

from __future__ import annotations

import json
import time
from collections import deque

from schemas import io as storage
from schemas.layout import RunFiles

LIVE = RunFiles.LIVE
EVAL_DIR = RunFiles.EVAL
RECENT = 20  # metric records kept in the live file
EVALS = 50  # checkpoint evaluations kept in the live file


def eval_name(step: int, ext: str) -> str:
    return f"step-{step:07d}.{ext}"


class LiveLog:
    """Rank 0's view of the run for the live file. A resumed run starts with the evaluations already in
    <run>/eval/ (one listing) and no recent metrics."""

    def __init__(self, run_dir: str, max_steps: int):
        self.run_dir, self.max_steps = run_dir, max_steps
        self.recent: deque[dict] = deque(maxlen=RECENT)
        self.evals: deque[dict] = deque(read_evals(run_dir), maxlen=EVALS)

    def add_metrics(self, m: dict) -> None:
        self.recent.append(m)

    def add_eval(self, record: dict) -> None:
        while self.evals and self.evals[-1]["step"] >= record["step"]:  # a step retried after a crash
            self.evals.pop()
        self.evals.append(record)

    def write(self, step: int) -> None:
        state = {"step": step, "max_steps": self.max_steps, "time": time.time(), "recent": list(self.recent),
                 "evals": list(self.evals)}
        storage.atomic_write_bytes(storage.join(self.run_dir, LIVE), json.dumps(state).encode())


def read_evals(run_dir: str, last: int = EVALS) -> list[dict]:
    """The last `last` checkpoint evaluations written under <run>/eval/, in step order."""
    fs, path = storage.fs_path(storage.join(run_dir, EVAL_DIR))
    if not fs.exists(path):
        return []
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(RunFiles.JSON))[-last:]
    out = []
    for p in names:
        with fs.open(p, "rb") as f:
            out.append(json.loads(f.read()))
    return sorted(out, key=lambda r: r["step"])


def read_live(run_dir: str) -> dict | None:
    """The live file, or None while it does not exist yet."""
    fs, path = storage.fs_path(storage.join(run_dir, LIVE))
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
