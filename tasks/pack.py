"""Pack a preset's instructed pairs into a WebDataset shard set: <root>/shards/<name>/ (one unit)."""

from __future__ import annotations

from tasks import storage
from tasks.instruct import load_instructed, pair_samples
from tasks.shards import write_shard_set
from tasks.stage import Resources, Stage, StageReport, UnitReport


class PackStage(Stage):
    name = "pack"
    single = True
    resources = Resources(cpus=1.0)

    @property
    def label(self) -> str:
        return f"pack-{self.params['shard_name']}"

    @property
    def out(self) -> str:
        return self.layout.shards(self.params["shard_name"])

    def plan(self) -> int:
        return 1

    def unit_outputs(self, k: int) -> list[str]:
        return [self.layout.marker(self.out)]

    def run(self, k: int) -> UnitReport:
        from tasks.ingest import load_catalog

        by_id = {r.id: r for r in load_catalog(self.cfg.root)}
        pairs = load_instructed(self.layout.instructed(self.params["preset"]))
        rep = write_shard_set(pair_samples(pairs, by_id, self.cfg.ingest), self.out, self.cfg.shards)
        return UnitReport(stage=self.label, unit=k, counts={"samples": rep.samples, "shards": rep.shards})

    def final_outputs(self) -> list[str]:
        return self.unit_outputs(0)

    def finalize(self, n: int) -> StageReport:
        rep = self.report()
        if rep is None:
            raise RuntimeError(f"{self.out} has no marker: its unit did not complete")
        return rep

    def report(self) -> StageReport | None:
        m = storage.read_marker(self.out)
        if m is None:
            return None
        return StageReport(stage=self.label, units=1, outputs=[self.out],
                           counts={"uri": self.out, "shards": m["shards"], "samples": m["samples"],
                                   "bytes": m["bytes"], "counts_by_task": m["counts_by_task"]})
