"""Pack a preset's instructed pairs into a WebDataset shard set: <root>/shards/<name>/ (one unit)."""

from __future__ import annotations

from tasks import storage
from tasks.instruct import load_instructed, pair_samples
from tasks.shards import write_shard_set
from tasks.stage import Resources, SingleUnitStage, StageReport, UnitReport


class PackStage(SingleUnitStage):
    name = "pack"
    resources = Resources(cpus=1.0)

    @property
    def label(self) -> str:
        return f"pack-{self.params['shard_name']}"

    @property
    def out(self) -> str:
        return self.layout.shards(self.params["shard_name"])

    def run(self, k: int) -> UnitReport:
        from tasks.ingest import load_catalog

        by_id = {r.id: r for r in load_catalog(self.cfg.root)}
        pairs = load_instructed(self.layout.instructed(self.params["preset"]))
        rep = write_shard_set(pair_samples(pairs, by_id, self.cfg.ingest), self.out, self.cfg.shards)
        return UnitReport(stage=self.label, unit=k, counts={"samples": rep.samples, "shards": rep.shards})

    def report(self) -> StageReport | None:
        m = storage.read_marker(self.out)
        if m is None:
            return None
        return StageReport(stage=self.label, units=1, outputs=[self.out],
                           counts={"uri": self.out, "shards": m["shards"], "samples": m["samples"],
                                   "bytes": m["bytes"], "counts_by_task": m["counts_by_task"]})
