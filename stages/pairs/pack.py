"""Pack a preset's instructed pairs into a WebDataset shard set: <root>/shards/<name>/, one unit per
instructed batch (stages/pack_units.py).

When new images land, only the batches they changed are new units: the shards of the other batches keep
their bytes, and the shards of batches no longer mined go. Every sample passes the supervision gate
(stages/supervise.py) of its unit or is dropped and counted by task and reason in the shard set's marker."""

from __future__ import annotations

from typing import Iterator

from store import storage
from schemas.layout import PairFiles
from schemas.records import AceSample, Generator
from stages.pack_units import UnitPackStage
from stages.pairs.instruct import (group_ids, group_samples, instructed_batches, iter_groups, iter_pair_batches,
                                   pair_ids_and_images, pair_samples)
from runtime.stage import StageReport
from stages.supervise import settings as supervision_settings


class PackStage(UnitPackStage):
    """One unit per instructed batch (group presets: per mined batch), each its own shards."""

    name = "pack"
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

    def unit_inputs(self) -> list[tuple[str, str]]:
        if getattr(self, "_inputs_cache", None) is None:
            if self.groups:
                from stages.pairs.mine import MineStage

                mined = self.layout.pairs(self.params["preset"])
                if storage.read_marker(mined) is None:
                    raise FileNotFoundError(f"no complete pair mining under {mined}")
                dirs = MineStage(self.cfg, preset=self.params["preset"])._batches()
            else:
                dirs = instructed_batches(self.layout.instructed(self.params["preset"]))
            self._inputs_cache = [(d.rstrip("/").rsplit("/", 1)[-1], d) for d in dirs]
        return self._inputs_cache

    def _task(self) -> str:
        from mining.pairs.presets import preset

        return preset(self.params["preset"]).task

    def unit_promised(self, k: int) -> dict[str, int]:
        c = storage.read_marker(self.unit_inputs()[k][1])["counts"]
        return {self._task(): c["groups"] if self.groups else c.get("with_instruction", 0)}

    def unit_samples(self, k: int) -> Iterator[AceSample]:
        from stages.corpus.ingest import catalog_uris

        d = self.unit_inputs()[k][1]
        if self.groups:
            yield from self._group_samples(d)
            return
        pairs_file = PairFiles(d).pairs
        _, images = pair_ids_and_images(pairs_file, instructed_only=True)
        uris = catalog_uris(self.cfg.root, images)  # id -> URI of this unit's images only
        pairs = (p for batch in iter_pair_batches(pairs_file) for p in batch)
        yield from pair_samples(pairs, uris, self.cfg.ingest)

    def _group_samples(self, d: str) -> Iterator[AceSample]:
        from stages.corpus.ingest import catalog_uris
        from stages.pairs.mine import BAND_GENERATOR, MineStage

        groups_file = PairFiles(d).table("groups")
        uris = catalog_uris(self.cfg.root, group_ids(groups_file))
        emb = storage.read_marker(MineStage(self.cfg, preset=self.params["preset"])._inputs()[0])
        if emb is None:
            raise FileNotFoundError(f"{self.label}: the embeddings the groups were mined from are incomplete")
        gens = [Generator(name=emb["embedder"], version=emb["version"]), BAND_GENERATOR]
        yield from group_samples(iter_groups(groups_file), uris, self._task(), gens, self.cfg.ingest)


def packs_groups(preset_name: str) -> bool:
    from mining.pairs.presets import preset

    return preset(preset_name).task == "series_generation"


def shard_set_report(stage, out: str) -> StageReport | None:
    """The report of a stage whose one output is the shard set `out`, from the set's marker (None while the
    set is incomplete or of other settings)."""
    m = stage.current(storage.read_marker(out))
    if m is None:
        return None
    return StageReport(stage=stage.label, items=len(m.get("units") or [None]), outputs=[out],
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
