"""Pack style pairs and chains into their own shard set: <root>/shards/<prefix>-<synthesis.shard_name>-chains/.

Style records give `style_transfer_reference` (content as the edit input + a style reference) and
`style_editing` (the content alone); long-context and multi-turn records give one sample each. The samples
written per task must equal what the stages' markers promise, or no marker is written.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

from schemas.records import AceSample
from tasks import storage
from tasks.chain_records import chain_samples, iter_chain_records
from tasks.pack import shard_set_report
from tasks.shards import write_shard_set
from tasks.stage import Resources, StageReport, UnitReport
from tasks.synth_chains import LongContextStage, MultiTurnStage
from tasks.synth_pack import SynthPackStage
from tasks.synth_style import STYLE_TASKS, StyleStage


def chain_stages(cfg) -> list:
    """The stages the configured chain tasks need (long_context also needs the object removals)."""
    tasks = cfg.synthesis.tasks
    out = []
    if any(t in STYLE_TASKS for t in tasks):
        out.append(StyleStage(cfg))
    if "long_context" in tasks:
        out.append(LongContextStage(cfg))
    if "multi_turn" in tasks:
        out.append(MultiTurnStage(cfg))
    return out


class ChainPackStage(SynthPackStage):
    """A synthesized shard set like SynthPackStage's (announced and landed with the run's other sets), over
    the chain records."""

    name = "pack-chains"
    resources = Resources(cpus=1.0)

    @property
    def label(self) -> str:
        return f"pack-{self.params['shard_name']}"

    @property
    def out(self) -> str:
        return self.layout.shards(self.params["shard_name"])

    def _sources(self) -> list[tuple[str, list[str]]]:
        tasks = self.cfg.synthesis.tasks
        out = []
        for st in chain_stages(self.cfg):
            mine = [t for t in tasks if t in STYLE_TASKS] if isinstance(st, StyleStage) else \
                ["long_context" if isinstance(st, LongContextStage) else "multi_turn"]
            out.append((st.out, mine))
        return out

    def inputs(self) -> list[str]:
        return [d for d, _ in self._sources()]

    def settings(self) -> dict:
        return {"shards": self._shard_config().model_dump(mode="json"),
                "tasks": [t for _, ts in self._sources() for t in ts]}

    def _shard_config(self):
        """png: the long-context samples keep their input's pixels outside the mask exactly."""
        return self.cfg.shards.model_copy(update={"image_ext": "png"})

    def expected(self) -> dict[str, int]:
        want: Counter[str] = Counter()
        for d, tasks in self._sources():
            c = storage.read_marker(d)["counts"]
            for t in tasks:
                want[t] += c["pairs"] if t in STYLE_TASKS else c["samples"]
        return dict(want)

    def _samples(self, want: dict[str, int]) -> Iterator[AceSample]:
        got: Counter[str] = Counter()
        for d, tasks in self._sources():
            for rec in iter_chain_records(d):
                for sample in chain_samples(rec, tasks):
                    got[sample.task] += 1
                    yield sample
        if {t: n for t, n in got.items() if n} != {t: n for t, n in want.items() if n}:
            raise RuntimeError(f"{self.label}: packed {dict(got)} samples per task, the stages promise {want}: "
                               "no marker written")

    def run(self, k: int) -> UnitReport:
        for d in self.inputs():
            if storage.read_marker(d) is None:
                raise FileNotFoundError(f"no complete synthesis under {d}")
        rep = write_shard_set(self._samples(self.expected()), self.out, self._shard_config(), extend=True)
        self.stamp(self.out)
        return UnitReport(stage=self.label, unit=k, counts={"samples": rep.samples, "shards": rep.shards,
                                                            "kept_shards": rep.resumed_shards})

    def report(self) -> StageReport | None:
        return shard_set_report(self, self.out)
