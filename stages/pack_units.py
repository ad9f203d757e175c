"""A shard set packed in units (store/shard_units.py): one item per input unit (an instructed or mined batch,
a producer's part), each writing its own shards behind its own supervision gate, merged by `finalize`.

A unit's name is its input's directory name and a digest of the packer's settings and the input's marker:
a unit whose input did not change keeps its name, so its item is done and its tars keep their bytes; new
inputs are new units with new shards, and the shards of inputs no longer planned go at finalize.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Iterator

from schemas.config import ShardConfig
from schemas.records import AceSample
from stages.supervise import Gate, merged_summary, reconcile
from runtime.stage import ItemReport, Resources, Stage, StageReport
from store import storage
from store.shard_units import finalize_shard_set, read_unit, unit_uri, write_shard_unit
from store.sample_table import UnitRows
from store.set_report import write_report
from mining.quality import identity as quality_identity, make_pair_scorer


class UnitPackStage(Stage):
    item_name = "unit"
    resources = Resources(cpus=1.0)

    @property
    @abstractmethod
    def out(self) -> str: ...

    @abstractmethod
    def unit_inputs(self) -> list[tuple[str, str]]:
        """(name stem, input directory) per unit, in the set's order; the stem is unique within the set."""

    @abstractmethod
    def unit_samples(self, k: int) -> Iterator[AceSample]:
        """Unit k's samples, before the gate."""

    @abstractmethod
    def unit_promised(self, k: int) -> dict[str, int]:
        """Samples per task unit k's input promises (what reaches its gate)."""

    def shard_config(self) -> ShardConfig:
        return self.cfg.shards

    def set_config(self) -> ShardConfig:
        """`shard_config` with `image_ext: auto` made concrete for the whole set (every unit the same): the
        target extension of the first sample of the first unit that has one, else png. It is part of the
        units' names, so a set whose resolved extension changes is written again whole, never mixed."""
        cfg = self.shard_config()
        if cfg.image_ext != "auto":
            return cfg
        if getattr(self, "_set_cfg", None) is None:
            ext = "png"
            for k in range(len(self.unit_inputs())):
                first = next(iter(self.unit_samples(k)), None)
                if first is not None:
                    ext = first.target.image_ext
                    break
            self._set_cfg = cfg.model_copy(update={"image_ext": ext})
        return self._set_cfg

    def _pair_scorer(self):
        """The SigLIP pair scorer of the quality scores, None without its weights (or with scores off)."""
        if not hasattr(self, "_scorer"):
            self._scorer = make_pair_scorer(self.cfg.models_dir) if self.cfg.shards.quality.scores else None
        return self._scorer

    def worker_model(self):
        """The pair scorer where its weights exist: a worker then holds what it declares (a GPU share there)."""
        return self._pair_scorer()

    def setup(self) -> None:
        scorer = self._pair_scorer()
        if scorer is not None:
            scorer.setup()

    def unit_extra(self) -> dict[str, Any]:
        """What unit k's file holds besides its shards and gate counts (read once its samples are out)."""
        return {}

    def marker_extra(self, docs: list[dict]) -> dict[str, Any]:
        """What the set's marker holds besides the merged gate counts, from the units' files."""
        return {}

    def units(self) -> list[str]:
        if getattr(self, "_unit_cache", None) is None:
            from stages.synthesis.parts import digest

            base = [self.settings(), self.set_config().image_ext, quality_identity(self.cfg.models_dir)]
            self._unit_cache = [f"{stem}-{digest([base, stem, storage.read_marker(d)])}"
                                for stem, d in self.unit_inputs()]
        return self._unit_cache

    def plan(self) -> int:
        return len(self.units())

    def item_outputs(self, k: int) -> list[str]:
        return [unit_uri(self.out, self.cfg.shards.prefix, self.units()[k])]

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def run(self, k: int) -> ItemReport:
        stem, d = self.unit_inputs()[k]
        if storage.read_marker(d) is None:
            raise FileNotFoundError(f"{self.label}: no complete input under {d}")
        cfg = self.set_config()
        q = self.cfg.shards.quality
        gate = Gate(self.cfg.supervision, cfg, quality=q.scores,
                    pair_scorer=self._pair_scorer() if q.scores else None)
        promised = self.unit_promised(k)
        rows = UnitRows(self.out, cfg.prefix, self.units()[k], q.thumbnails_per_task)

        def checked():  # raises before the unit's file when the samples checked are not those promised
            yield from map(rows.add, gate(self.unit_samples(k)))
            reconcile(f"{self.label} unit {stem}", promised, gate)

        extra: dict[str, Any] = {}

        def ends() -> dict:
            extra.update(self.unit_extra())
            return {"supervision": gate.summary(), **extra}

        doc, _ = write_shard_unit(checked(), self.out, self.units()[k], cfg, extra=ends, before_done=rows.write)
        return ItemReport(stage=self.label, item=k, counts={"samples": doc["samples"], "shards": len(doc["shards"]),
                                                            "supervision_dropped": doc["supervision"]["dropped"],
                                                            **extra})

    def finalize(self, n: int) -> StageReport:
        units = self.units()
        if len(units) != n:
            raise RuntimeError(f"{self.label}: {n} items ran but its inputs now give {len(units)} units")
        cfg = self.set_config()
        docs = []
        for u in units:
            doc = read_unit(self.out, cfg.prefix, u)
            if doc is None:
                raise RuntimeError(f"{self.label}: unit {u} is not written: run its item first")
            doc.pop("shards")
            docs.append(doc)
        promised = sum(sum(self.unit_promised(k).values()) for k in range(n))
        sup = merged_summary(self.cfg.supervision, (d["supervision"] for d in docs))
        gated = sum(sup["checked"].values())
        if promised != gated or sum(d["samples"] for d in docs) != gated - sum(
                sum(r.values()) for r in sup["dropped"].values()):
            raise RuntimeError(f"{self.label}: units promise {promised} samples, their gates saw {gated}: "
                               "no marker written")
        finalize_shard_set(self.out, units, cfg, {"supervision": sup, **self.marker_extra(docs),
                                                  "quality": quality_identity(self.cfg.models_dir),
                                                  "upstream_drops": self.upstream_drops()})
        write_report(self.out, stage=self.label)
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def upstream_drops(self) -> dict[str, dict[str, int]]:
        """What the stages that made this set's inputs dropped, by reason: from the marker of the stage folder
        above each unit input (`counts.dropped` or `counts.drops`), keyed by that folder's place in the root."""
        out: dict[str, dict[str, int]] = {}
        root = storage.absolute(self.cfg.root).rstrip("/")
        for _, d in self.unit_inputs():
            up = storage.parent(d)
            for _ in range(3):  # a part or batch sits one or two folders below its stage's marker
                if not (storage.absolute(up) or up).startswith(root + "/"):
                    break  # never above the run root
                m = storage.read_marker(up)
                counts = (m or {}).get("counts") or {}
                drops = counts.get("dropped", counts.get("drops"))
                if isinstance(drops, dict):
                    label = (storage.absolute(up) or up).removeprefix(root).strip("/")
                    out.setdefault(label, {k: v for k, v in _flat_counts(drops).items() if v})
                    break
                up = storage.parent(up)
        return out

    def report(self) -> StageReport | None:
        from stages.pairs.pack import shard_set_report

        return shard_set_report(self, self.out)


def _flat_counts(d: dict, prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_counts(v, f"{prefix}{k}: "))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = int(v)
    return out
