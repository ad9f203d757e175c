"""Pack a preset's instructed pairs into a WebDataset shard set: <root>/shards/<name>/ (one unit).

When the instructed pairs grew (new images landed), the finished shards whose samples are unchanged are
kept and only the rest are written (the pairs keep their order: tasks/instruct.py)."""

from __future__ import annotations

from tasks import storage
from tasks.instruct import iter_pair_batches, pair_ids_and_images, pair_samples
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

    def inputs(self) -> list[str]:
        return [self.layout.instructed(self.params["preset"])]

    def settings(self) -> dict:
        return {"shards": self.cfg.shards.model_dump(mode="json"), "max_pixels": self.cfg.ingest.max_pixels}

    def run(self, k: int) -> UnitReport:
        from tasks.ingest import catalog_uris

        instructed = self.layout.instructed(self.params["preset"])
        if storage.read_marker(instructed) is None:
            raise FileNotFoundError(f"no complete instructed pairs under {instructed}")
        pairs_file = storage.join(instructed, "pairs.parquet")
        _, images = pair_ids_and_images(pairs_file, instructed_only=True)
        uris = catalog_uris(self.cfg.root, images)  # id -> URI of the images packed: no catalog records held
        pairs = (p for batch in iter_pair_batches(pairs_file) for p in batch)
        rep = write_shard_set(pair_samples(pairs, uris, self.cfg.ingest), self.out, self.cfg.shards, extend=True)
        self.stamp(self.out)
        return UnitReport(stage=self.label, unit=k, counts={"samples": rep.samples, "shards": rep.shards,
                                                            "kept_shards": rep.resumed_shards})

    def report(self) -> StageReport | None:
        return shard_set_report(self, self.out)


def shard_set_report(stage, out: str) -> StageReport | None:
    """The report of a stage whose one output is the shard set `out`, from the set's marker (None while the
    set is incomplete or of other settings)."""
    m = stage.current(storage.read_marker(out))
    if m is None:
        return None
    return StageReport(stage=stage.label, units=1, outputs=[out],
                       counts={"uri": out, "shards": m["shards"], "samples": m["samples"], "bytes": m["bytes"],
                               "counts_by_task": m["counts_by_task"], "kept_shards": m.get("kept_shards", 0)})
