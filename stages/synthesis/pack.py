"""Pack the synthesized samples into one shard set: <root>/shards/<prefix>-<synthesis.shard_name>/, one unit
per producer part (stages/pack_units.py: a new part is new shards, the others keep theirs).

Object records give `object_removal` (edit = source, target = object removed), `object_addition` (the
exact reverse, same mask), `layer_decouple` and `layer_fusion`; repaint records give `inpainting` and
`outpainting`; text records (stored as removals: edit = with text, target = without) give
`text_removal` and `text_addition` (the exact reverse); map records the analysis / control tasks
(stages/synthesis/maps.py); face pair records the facial tasks and face-erased references
(stages/synthesis/faces.py). Only the configured tasks are packed. Every sample passes the supervision gate
(stages/supervise.py) or is dropped and counted by task and reason; the samples reaching a unit's gate per
task must equal what its part's marker promises, or the unit is not written.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Iterable, Iterator

from schemas.records import AceSample, Generator
from store import storage
from stages.pairs.pack import shard_set_lines, shard_set_report
from runtime.stage import Stage
from stages.pack_units import UnitPackStage
from stages.synthesis.parts import iter_part_records
from stages.supervise import settings as supervision_settings


class SynthPackStage(UnitPackStage):
    """Packs the records of the registered producers whose `shard_set` is `packs` (stages/registry.py): one
    unit per producer part (`record_parts`), in registry order then part order, each producer's tasks in
    config order."""

    name = "pack-synthesis"
    packs, key, config_section, ui_report = "synthesis", "shards", "shards", "synth_landed"
    title = "synthesis shard set"  # its line in the command line's summary
    records = staticmethod(iter_part_records)  # one part's records, from its directory

    def summary_entry(self, counts: dict, ran_now: bool) -> dict:
        return {**counts, "landed_now": ran_now}

    @classmethod
    def summary(cls, s: dict, group: dict, name: str) -> str:
        return shard_set_lines(cls.title, s)

    @property
    def label(self) -> str:
        return f"pack-{self.params['shard_name']}"

    @property
    def out(self) -> str:
        return self.layout.shards(self.params["shard_name"])

    def producers(self) -> list[tuple[Stage, list[str]]]:
        """(producer, the tasks packed from its records) for each producer of this shard set with a task to pack."""
        from stages.registry import producers

        if getattr(self, "_producers", None) is None:
            stages = [cls(self.cfg) for cls in producers(self.packs)]
            self._producers = [(st, tasks) for st in stages if (tasks := st.packed_tasks())]
        return self._producers

    def _sources(self) -> list[tuple[str, list[str]]]:
        return [(st.out, tasks) for st, tasks in self.producers()]

    def inputs(self) -> list[str]:
        return [d for d, _ in self._sources()]

    def settings(self) -> dict:
        out = {"shards": self.shard_config().model_dump(mode="json"), "tasks": self.cfg.synthesis.tasks,
               "supervision": supervision_settings(self.cfg.supervision)}
        if self.cfg.synthesis.chat_instructions:
            ic = self.cfg.mining.instructions
            out["chat"] = [ic.base_url, ic.model]
        return out

    def _chat(self):
        """The chat writer of mining.instructions, when synthesis.chat_instructions asks for it."""
        if not self.cfg.synthesis.chat_instructions:
            return None
        from mining.instructions.writers import ChatInstructionWriter

        ic = self.cfg.mining.instructions
        if not ic.model:
            raise ValueError("synthesis.chat_instructions needs mining.instructions.model (and base_url)")
        return ChatInstructionWriter.from_config(ic, self.layout.instruction_cache)

    def shard_config(self):
        """Always png: a synthesized sample keeps its source's pixels outside the mask exactly, which a lossy
        re-encoding of the edit image and the target would break."""
        return self.cfg.shards.model_copy(update={"image_ext": "png"})

    def _units(self) -> list[tuple[str, str, Stage, list[str]]]:
        """(name stem, part directory, producer, tasks) per unit, in registry order then part order."""
        if getattr(self, "_unit_list", None) is None:
            units = []
            for st, tasks in self.producers():
                if storage.read_marker(st.out) is None:
                    raise FileNotFoundError(f"no complete synthesis under {st.out}")
                kind = st.out.rstrip("/").rsplit("/", 1)[-1]
                for d in st.record_parts():
                    units.append((f"{kind}-{d.rstrip('/').rsplit('/', 1)[-1]}", d, st, tasks))
            self._unit_list = units
        return self._unit_list

    def unit_inputs(self) -> list[tuple[str, str]]:
        return [(stem, d) for stem, d, _, _ in self._units()]

    def unit_promised(self, k: int) -> dict[str, int]:
        _, d, st, tasks = self._units()[k]
        c = storage.read_marker(d)["counts"]
        return {t: st.expected(c, t) for t in tasks}

    def _captions(self) -> tuple[dict[str, str], Generator | None]:
        """Image id -> caption of the caption stage, when this run makes text_to_image (else none); read once
        per stage object, not once per unit."""
        if getattr(self, "_caption_cache", None) is None:
            self._caption_cache = self._read_captions()
        return self._caption_cache

    def _read_captions(self) -> tuple[dict[str, str], Generator | None]:
        if "text_to_image" not in self.cfg.synthesis.tasks or self.packs != "synthesis":
            return {}, None
        from stages.synthesis.captions import CaptionStage, captions

        st = CaptionStage(self.cfg)
        if storage.read_marker(st.out) is None:
            return {}, None
        name = st.captioner_name()
        return captions(st.out), Generator(name=name.rsplit(":", 1)[0], version=name.rsplit(":", 1)[-1])

    def unit_samples(self, k: int) -> Iterator[AceSample]:
        from stages.synthesis.captions import with_caption

        _, d, st, tasks = self._units()[k]
        self.instruction_counts: Counter[str] = Counter()
        caps, captioner = self._captions()
        chat = self._chat()
        try:
            samples = (with_caption(sample, caps, captioner, self.instruction_counts) if caps else sample
                       for rec in self.records(d) for sample in st.samples(rec, tasks))
            if chat is None:
                yield from samples
            else:
                yield from chat_instructions(samples, chat, self.instruction_counts)
        finally:
            if chat is not None:
                chat.close()
                self.instruction_counts.update(chat.counts)

    def unit_extra(self) -> dict:
        return {"instructions": dict(self.instruction_counts)} if self.instruction_counts else {}

    def marker_extra(self, docs: list[dict]) -> dict:
        total: Counter[str] = Counter()
        for d in docs:
            total.update(d.get("instructions") or {})
        return {"instructions": dict(total)}


def chat_instructions(samples: Iterable[AceSample], writer, counts: Counter) -> Iterator[AceSample]:
    """`chat_instruction` of each sample, in order, the single-input ones written a chunk at a time with
    the writer's `write_many` (a chat writer keeps `in_flight` requests going): memory is one chunk."""
    from mining.instructions.writers import write_all

    chunk = 4 * max(1, getattr(writer, "in_flight", 1))
    it = iter(samples)
    while group := list(islice(it, chunk)):
        single = [s for s in group if len(s.units) == 1]
        written = iter(write_all(writer, [_chat_item(s) for s in single]))
        for s in group:
            yield chat_instruction(s, writer, counts, written=next(written) if len(s.units) == 1 else _UNSET)


_UNSET = object()  # chat_instruction: nothing written yet


def _chat_item(sample: AceSample):
    from schemas.records import PairRecord

    src = sample.lineage.source_ids[0] if sample.lineage.source_ids else sample.key
    pair = PairRecord(pair_id=sample.key, source_id=src, target_id=src, task=sample.task, similarity=0.0)
    return pair, sample.units[0].image, sample.target.image, sample.units[0].image_ext, sample.target.image_ext


def chat_instruction(sample: AceSample, writer, counts: Counter, written=_UNSET) -> AceSample:
    """The sample with the chat endpoint's instruction for its edit image -> target (single-input samples;
    lineage gains the writer), or unchanged (a multi-input sample, no instruction, or an endpoint error):
    every sample is counted under `chat`, `template_multi_input`, `template_no_reply` or `chat_fallback` (the
    endpoint failed or its breaker is open). `written`: what the writer already made of it (write_many)."""
    from mining.instructions.writers import InstructionError

    if len(sample.units) != 1:
        counts["template_multi_input"] += 1
        return sample
    if written is _UNSET:
        try:
            written = writer.write(*_chat_item(sample))
        except InstructionError as e:
            written = e
    ins = written
    if isinstance(ins, InstructionError):
        counts["chat_fallback"] += 1
        return sample
    if ins is None:
        counts["template_no_reply"] += 1
        return sample
    counts["chat"] += 1
    gens = [*sample.lineage.generators, Generator(name=writer.name.rsplit(":", 1)[0], version=writer.name.rsplit(":", 1)[-1])]
    return sample.model_copy(update={"instruction": ins.instruction, "caption": ins.caption,
                                     "lineage": sample.lineage.model_copy(update={"generators": gens})})
