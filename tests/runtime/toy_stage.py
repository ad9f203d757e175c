"""A stage for the executor tests: it records every setup() and run() call in files, one per process, so a
test sees how often each worker set up and which units ran, whichever process ran them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.stage import Resources, Stage, StageReport, UnitReport


def calls(root: str, what: str) -> dict[int, list[str]]:
    """{pid: [the stage labels and units it recorded]} for `what` in ('setup', 'run')."""
    folder = Path(root) / "toy-calls"
    return {int(p.name.split("-")[1]): p.read_text().split()
            for p in sorted(folder.glob(f"{what}-*"))} if folder.is_dir() else {}


class ToyStage(Stage):
    """`n` units; unit k writes units/unit-k.json with k + 1 items; finalize sums the items from the files."""

    name = "toy"
    resources = Resources(cpus=0.5)

    @property
    def out(self) -> Path:
        return Path(self.cfg.root) / self.name

    def _record(self, what: str, entry: str) -> None:
        folder = Path(self.cfg.root) / "toy-calls"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{what}-{os.getpid()}", "a") as f:
            f.write(entry + "\n")

    def setup(self) -> None:
        self._record("setup", self.label)

    def plan(self) -> int:
        return self.params["n"]

    def unit_outputs(self, k: int) -> list[str]:
        return [str(self.out / "units" / f"unit-{k}.json")]

    def run(self, k: int) -> UnitReport:
        self._record("run", f"{self.label}:{k}")
        path = Path(self.unit_outputs(k)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"items": k + 1}))
        return UnitReport(stage=self.label, unit=k, counts={"items": k + 1, "kind": "toy", "by": {"unit": 1}})

    def final_outputs(self) -> list[str]:
        return [str(self.out / "done.json")]

    def finalize(self, n: int) -> StageReport:
        items = sum(json.loads(Path(self.unit_outputs(k)[0]).read_text())["items"] for k in range(n))
        Path(self.final_outputs()[0]).write_text(json.dumps({"units": n, "items": items}))
        return self.report()  # type: ignore[return-value]

    def report(self) -> StageReport | None:
        done = Path(self.final_outputs()[0])
        if not done.is_file():
            return None
        m = json.loads(done.read_text())
        return StageReport(stage=self.label, units=m["units"], outputs=[str(self.out)], counts={"items": m["items"]})


class ToyModelStage(ToyStage):
    """The same units on actors (a model stage)."""

    name = "toy-model"
    model = True
