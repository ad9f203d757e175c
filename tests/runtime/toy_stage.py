"""A stage for the executor tests: it records every setup() and run() call in files, one per process, so a
test sees how often each worker set up and which items ran, whichever process ran them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.stage import ItemReport, Resources, Stage, StageReport


def calls(root: str, what: str) -> dict[int, list[str]]:
    """{pid: [the stage labels and items it recorded]} for `what` in ('setup', 'run')."""
    folder = Path(root) / "toy-calls"
    return {int(p.name.split("-")[1]): p.read_text().split()
            for p in sorted(folder.glob(f"{what}-*"))} if folder.is_dir() else {}


class ToyStage(Stage):
    """`n` items; item k writes items/item-k.json with k + 1 rows; finalize sums the rows from the files."""

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

    def item_outputs(self, k: int) -> list[str]:
        return [str(self.out / "items" / f"item-{k}.json")]

    def run(self, k: int) -> ItemReport:
        self._record("run", f"{self.label}:{k}")
        path = Path(self.item_outputs(k)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": k + 1}))
        return ItemReport(stage=self.label, item=k, counts={"rows": k + 1, "kind": "toy", "by": {"item": 1}})

    def final_outputs(self) -> list[str]:
        return [str(self.out / "done.json")]

    def finalize(self, n: int) -> StageReport:
        rows = sum(json.loads(Path(self.item_outputs(k)[0]).read_text())["rows"] for k in range(n))
        Path(self.final_outputs()[0]).write_text(json.dumps({"items": n, "rows": rows}))
        return self.report()  # type: ignore[return-value]

    def report(self) -> StageReport | None:
        done = Path(self.final_outputs()[0])
        if not done.is_file():
            return None
        m = json.loads(done.read_text())
        return StageReport(stage=self.label, items=m["items"], outputs=[str(self.out)], counts={"rows": m["rows"]})


class ToyModelStage(ToyStage):
    """The same items on actors (a model stage)."""

    name = "toy-model"
    model = True
