"""Pack style pairs and chains into their own shard set: <root>/shards/<prefix>-<synthesis.shard_name>-chains/.

Style records give `style_transfer_reference` (content as the edit input + a style reference) and
`style_editing` (the content alone); long-context and multi-turn records give one sample each. The samples
reaching the supervision gate per task must equal what the stages' markers promise, or no marker is written.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

from schemas.records import AceSample
from tasks import storage
from tasks.chain_records import chain_samples, iter_chain_records
from tasks.synth_chains import LongContextStage, MultiTurnStage
from tasks.supervise import settings as supervision_settings
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
    """A synthesized shard set like SynthPackStage's (announced and landed with the run's other sets; its
    label, folder, png shards, run and report), over the chain records."""

    name = "pack-chains"
    def _sources(self) -> list[tuple[str, list[str]]]:
        tasks = self.cfg.synthesis.tasks
        out = []
        for st in chain_stages(self.cfg):
            mine = [t for t in tasks if t in STYLE_TASKS] if isinstance(st, StyleStage) else \
                ["long_context" if isinstance(st, LongContextStage) else "multi_turn"]
            out.append((st.out, mine))
        return out

    def settings(self) -> dict:
        return {"shards": self._shard_config().model_dump(mode="json"),
                "tasks": [t for _, ts in self._sources() for t in ts],
                "supervision": supervision_settings(self.cfg.supervision)}

    def _chat(self):
        """Chains and style pairs keep their templated instructions."""
        return None

    def expected(self) -> dict[str, int]:
        want: Counter[str] = Counter()
        for d, tasks in self._sources():
            c = storage.read_marker(d)["counts"]
            for t in tasks:
                want[t] += c["pairs"] if t in STYLE_TASKS else c["samples"]
        return dict(want)

    def _samples(self) -> Iterator[AceSample]:
        for d, tasks in self._sources():
            for rec in iter_chain_records(d):
                yield from chain_samples(rec, tasks)
