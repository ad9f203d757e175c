"""A training run's data counts: every sample a worker's stream reads is kept for training or skipped for one
reason, so read = kept + skipped by reason. Each worker writes its counts into <run>/data-counts/ at every
checkpoint; the run reports their sum."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from schemas import io as storage
from schemas.layout import RunFiles

COUNTS_DIR = RunFiles.COUNTS


@dataclass
class DataCounts:
    """The samples a worker's stream read since the run (re)started: each one kept for training or skipped for
    one reason (read = kept + skipped). The first sample skipped for a reason that signals a fault is named."""

    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    named: dict[str, str] = field(default_factory=dict)  # reason -> its first sample ("sample 'k' of <tar>")

    def keep(self) -> None:
        self.read += 1
        self.kept += 1

    def add(self, reason: str, sample: str | None = None) -> None:
        self.read += 1
        self.skipped[reason] += 1
        if sample is not None and reason not in self.named:
            self.named[reason] = sample
            print(f"skipped {sample}: {reason} (later samples skipped for this reason are counted, not named)")

    def merge(self, other: "DataCounts") -> None:
        self.read += other.read
        self.kept += other.kept
        self.skipped.update(other.skipped)
        for reason, sample in other.named.items():
            self.named.setdefault(reason, sample)

    def summary(self) -> str:
        parts = [f"{self.kept} kept"] + [f"{n} {r}" for r, n in sorted(self.skipped.items())]
        return f"{self.read} samples read = " + " + ".join(parts)

    def plain(self) -> dict:
        return {"read": self.read, "kept": self.kept, "skipped": dict(sorted(self.skipped.items())),
                "named": self.named}

    def write(self, run_dir: str, rank: int) -> None:
        storage.atomic_write_bytes(storage.join(run_dir, COUNTS_DIR, RunFiles.count_name(rank)),
                                   json.dumps(self.plain()).encode())


def merge_counts(run_dir: str) -> DataCounts:
    """The data counts every worker of a run wrote (trainer/ray_job.py, at each checkpoint), summed."""
    total = DataCounts()
    fs, path = storage.fs_path(storage.join(run_dir, COUNTS_DIR))
    for p in sorted(fs.ls(path, detail=False)) if fs.exists(path) else []:
        if p.endswith(RunFiles.JSON):
            with fs.open(p, "rb") as f:
                d = json.loads(f.read())
            total.merge(DataCounts(d["read"], d["kept"], Counter(d["skipped"]), d.get("named", {})))
    return total
