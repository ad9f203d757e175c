"""Pack a preset's instructed pairs into a WebDataset shard set: <root>/shards/<name>/ (one item).

When the instructed pairs grew (new images landed), the finished shards whose samples are unchanged are
kept and only the rest are written (the pairs keep their order: stages/pairs/instruct.py). Every sample passes the
supervision gate (stages/supervise.py) or is dropped and counted by task and reason in the shard set's marker."""

from __future__ import annotations

from store import storage
from schemas.layout import PairFiles
from schemas.records import Generator
from stages.pairs.instruct import group_ids, group_samples, iter_groups, iter_pair_batches, pair_ids_and_images, pair_samples
from store.shards import write_shard_set
from runtime.stage import ItemReport, Resources, SingleItemStage, StageReport
from stages.supervise import Gate, reconcile, supervision_dropped
from stages.supervise import settings as supervision_settings


class PackStage(SingleItemStage):
    name = "pack"
    resources = Resources(cpus=1.0)
    always, scope, key, config_section, ui_report = True, "preset", "shards", "shards", "landed"
    needs = ("instructions",)  # group presets: the mined groups only

    def summary_entry(self, counts: dict, ran_now: bool) -> dict:
        return {**counts, "landed_now": ran_now}

    @classmethod
    def summary(cls, s: dict, group: dict, name: str) -> str:
        return shard_set_lines("shard set", s, instructions=False)

    @property
    def label(self) -> str:
        return f"pack-{self.params['shard_name']}"

    @property
    def out(self) -> str:
        return self.layout.shards(self.params["shard_name"])

    @property
    def groups(self) -> bool:
        """Group presets (series generation) pack the groups of their union-find sets, not pairs."""
        return packs_groups(self.params["preset"])

    def inputs(self) -> list[str]:
        if self.groups:
            return [self.layout.pairs(self.params["preset"])]
        return [self.layout.instructed(self.params["preset"])]

    def settings(self) -> dict:
        return {"shards": self.cfg.shards.model_dump(mode="json"), "max_pixels": self.cfg.ingest.max_pixels,
                "supervision": supervision_settings(self.cfg.supervision)}

    def run(self, k: int) -> ItemReport:
        from mining.pairs.presets import preset
        from stages.corpus.ingest import catalog_uris

        if self.groups:
            return self._run_groups(k)
        instructed = self.layout.instructed(self.params["preset"])
        done = storage.read_marker(instructed)
        if done is None:
            raise FileNotFoundError(f"no complete instructed pairs under {instructed}")
        pairs_file = PairFiles(instructed).pairs
        _, images = pair_ids_and_images(pairs_file, instructed_only=True)
        uris = catalog_uris(self.cfg.root, images)  # id -> URI of the images packed: no catalog records held
        pairs = (p for batch in iter_pair_batches(pairs_file) for p in batch)
        gate = Gate(self.cfg.supervision, self.cfg.shards)
        task = preset(self.params["preset"]).task

        def checked():  # every instructed pair reached the gate, or no marker is written
            yield from gate(pair_samples(pairs, uris, self.cfg.ingest))
            reconcile(self.label, {task: done["counts"].get("with_instruction", 0)}, gate)  # a Counter: absent = 0

        rep = write_shard_set(checked(), self.out, self.cfg.shards, extend=True,
                              marker_extra=lambda: {"supervision": gate.summary()})
        self.stamp(self.out)
        return ItemReport(stage=self.label, item=k, counts={"samples": rep.samples, "shards": rep.shards,
                                                            "kept_shards": rep.resumed_shards,
                                                            "supervision_dropped": supervision_dropped(self.out)})

    def _run_groups(self, k: int) -> ItemReport:
        from mining.pairs.presets import preset
        from stages.corpus.ingest import catalog_uris
        from stages.pairs.mine import BAND_GENERATOR, MineStage

        mined = self.layout.pairs(self.params["preset"])
        marker = storage.read_marker(mined)
        if marker is None:
            raise FileNotFoundError(f"no complete pair mining under {mined}")
        groups_file = PairFiles(mined).table("groups")
        uris = catalog_uris(self.cfg.root, group_ids(groups_file))
        task = preset(self.params["preset"]).task
        emb = storage.read_marker(MineStage(self.cfg, preset=self.params["preset"])._inputs()[0])
        if emb is None:
            raise FileNotFoundError(f"{self.label}: the embeddings the groups were mined from are incomplete")
        gens = [Generator(name=emb["embedder"], version=emb["version"]), BAND_GENERATOR]
        want = marker["counts"]["groups"]

        gate = Gate(self.cfg.supervision, self.cfg.shards)

        def checked():  # raises before the shard writer's marker when the groups checked are not the groups mined
            yield from gate(group_samples(iter_groups(groups_file), uris, task, gens, self.cfg.ingest))
            reconcile(self.label, {task: want}, gate)

        rep = write_shard_set(checked(), self.out, self.cfg.shards, extend=True,
                              marker_extra=lambda: {"supervision": gate.summary()})
        self.stamp(self.out)
        return ItemReport(stage=self.label, item=k, counts={"samples": rep.samples, "shards": rep.shards,
                                                            "kept_shards": rep.resumed_shards,
                                                            "supervision_dropped": supervision_dropped(self.out)})

    def report(self) -> StageReport | None:
        return shard_set_report(self, self.out)


def packs_groups(preset_name: str) -> bool:
    from mining.pairs.presets import preset

    return preset(preset_name).task == "series_generation"


def shard_set_report(stage, out: str) -> StageReport | None:
    """The report of a stage whose one output is the shard set `out`, from the set's marker (None while the
    set is incomplete or of other settings)."""
    m = stage.current(storage.read_marker(out))
    if m is None:
        return None
    return StageReport(stage=stage.label, items=1, outputs=[out],
                       counts={"uri": out, "shards": m["shards"], "samples": m["samples"], "bytes": m["bytes"],
                               "counts_by_task": m["counts_by_task"], "kept_shards": m.get("kept_shards", 0),
                               "supervision_dropped": (m.get("supervision") or {}).get("dropped", {}),
                               **({"instructions": m["instructions"]} if m.get("instructions") else {})})


def shard_set_lines(label: str, s: dict, instructions: bool = True) -> str:
    """A packed shard set in the command line's summary: where, how big, its tasks, what the gate dropped."""
    lines = [f"  {label}: {s['uri']}  ({s['shards']} shards, {s['samples']} samples, "
             f"{s['bytes'] / 2**20:.1f} MiB, tasks {s['counts_by_task']})"]
    if instructions and s.get("instructions"):
        lines.append(f"  instructions: {s['instructions']}")
    dropped = s.get("supervision_dropped") or {}
    if dropped:
        lines.append("  supervision dropped: " + "; ".join(
            f"{t} " + ", ".join(f"{r} {n}" for r, n in rs.items()) for t, rs in dropped.items()))
    return "\n".join(lines)
