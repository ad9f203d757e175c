"""Pack the synthesized samples into one shard set: <root>/shards/<prefix>-<synthesis.shard_name>/ (one unit).

Object records give `object_removal` (edit = source, target = object removed), `object_addition` (the
exact reverse, same mask), `layer_decouple` and `layer_fusion`; repaint records give `inpainting` and
`outpainting`; text records (stored as removals: edit = with text, target = without) give
`text_removal` and `text_addition` (the exact reverse); map records the analysis / control tasks
(tasks/synth_maps.py); face pair records the facial tasks and face-erased references
(tasks/synth_faces.py). Only the configured tasks are packed. Every sample passes the supervision gate
(tasks/supervise.py) or is dropped and counted by task and reason; the samples reaching the gate per task
must equal what the records promise, or no marker is written.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterator

import numpy as np

from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role
from tasks import storage
from tasks.pack import shard_set_report
from tasks.shards import write_shard_set
from tasks.stage import Resources, SingleUnitStage, StageReport, UnitReport
from tasks.synth_faces import FacePairsStage, face_samples, face_sources
from tasks.synth_maps import MAP_TASKS, MapsStage, expected_samples, map_record_samples
from tasks.synth_objects import OBJECT_TASKS, ObjectsStage
from tasks.synth_parts import iter_records, png, unpng
from tasks.synth_repaint import REPAINT_TASKS, RepaintStage
from tasks.supervise import Gate, reconcile, supervision_dropped
from tasks.supervise import settings as supervision_settings
from tasks.synth_text import TEXT_TASKS, TextStage


def on_white(source_png: bytes, object_png: bytes) -> bytes:
    """The object's pixels on a white canvas of the source's size."""
    src, obj = unpng(source_png), unpng(object_png) > 0
    out = np.full_like(src, 255)
    out[obj] = src[obj]
    return png(out)


def record_samples(rec: dict, tasks: list[str]) -> Iterator[AceSample]:
    """The AceSamples one synthesis record gives for `tasks`. An object record (edit = source, target =
    object removed, mask = the dilated object, object = its own mask) gives: object_removal; object_addition
    (the reverse); layer_decouple (source -> the object on white, the mask over everything but the object);
    layer_fusion (background with the mask + the object on white as a reference -> the source);
    inpainting_text_guided, for a named object only (the source with the mask blanked -> the source)."""
    if rec["kind"].startswith(("map:", "multi:")):  # condition maps and restoration: tasks/synth_maps.py
        yield from map_record_samples(rec, tasks)
        return
    instructions = json.loads(rec["instructions"])
    lineage = Lineage(source_ids=[rec["source_id"]],
                      generators=[Generator(name=n, version=v) for n, v in json.loads(rec["generators"])],
                      scores=json.loads(rec["scores"]), labels=json.loads(rec.get("labels") or "{}"))
    subject = None
    for task in tasks:
        if task not in instructions:
            continue
        units = [ConditionUnit(role=Role.EDIT, image=rec["edit_png"], mask=rec["mask_png"])]
        target = rec["target_png"]
        if task in ("object_addition", "text_addition"):  # the exact reverse of the stored removal
            units, target = [ConditionUnit(role=Role.EDIT, image=rec["target_png"], mask=rec["mask_png"])], \
                rec["edit_png"]
        elif task == "inpainting_text_guided":  # the named object's region blanked -> the source
            src, m = unpng(rec["edit_png"]), unpng(rec["mask_png"]) > 0
            units = [ConditionUnit(role=Role.EDIT, image=png(np.where(m[..., None], 0, src).astype(np.uint8)),
                                   mask=rec["mask_png"])]
            target = rec["edit_png"]
        elif task in ("layer_decouple", "layer_fusion"):
            subject = subject or on_white(rec["edit_png"], rec["object_png"])
            if task == "layer_decouple":
                background = png(np.where(unpng(rec["object_png"]) > 0, 0, 255).astype(np.uint8))
                units, target = [ConditionUnit(role=Role.EDIT, image=rec["edit_png"], mask=background)], subject
            else:
                units = [ConditionUnit(role=Role.EDIT, image=rec["target_png"], mask=rec["mask_png"]),
                         ConditionUnit(role=Role.REFERENCE, image=subject)]
                target = rec["edit_png"]
        yield AceSample(key=f"{task}-{rec['sample_id']}", task=task, instruction=instructions[task], units=units,
                        target=ConditionUnit(role=Role.TARGET, image=target), lineage=lineage)


class SynthPackStage(SingleUnitStage):
    name = "pack"
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
        if any(t in OBJECT_TASKS for t in tasks):
            out.append((self.layout.synth(ObjectsStage.kind), [t for t in tasks if t in OBJECT_TASKS]))
        if any(t in REPAINT_TASKS for t in tasks):
            out.append((self.layout.synth(RepaintStage.kind), [t for t in tasks if t in REPAINT_TASKS]))
        out += face_sources(self.cfg, self.layout)
        if any(t in TEXT_TASKS for t in tasks):  # text records are removals: each gives both tasks
            out.append((self.layout.synth(TextStage.kind), [t for t in tasks if t in TEXT_TASKS]))
        if any(t in MAP_TASKS for t in tasks):
            out.append((self.layout.synth(MapsStage.kind), [t for t in tasks if t in MAP_TASKS]))
        return out

    def inputs(self) -> list[str]:
        return [d for d, _ in self._sources()]

    def settings(self) -> dict:
        out = {"shards": self._shard_config().model_dump(mode="json"), "tasks": self.cfg.synthesis.tasks,
               "supervision": supervision_settings(self.cfg.supervision)}
        if self.cfg.synthesis.chat_instructions:
            ic = self.cfg.mining.instructions
            out["chat"] = [ic.base_url, ic.model]
        return out

    def _chat(self):
        """The chat writer of mining.instructions, when synthesis.chat_instructions asks for it."""
        if not self.cfg.synthesis.chat_instructions:
            return None
        from mining.instructions import ChatInstructionWriter

        ic = self.cfg.mining.instructions
        if not ic.model:
            raise ValueError("synthesis.chat_instructions needs mining.instructions.model (and base_url)")
        return ChatInstructionWriter.from_config(ic, self.layout.instruction_cache)

    def _shard_config(self):
        """Always png: a synthesized sample keeps its source's pixels outside the mask exactly, which a lossy
        re-encoding of the edit image and the target would break."""
        return self.cfg.shards.model_copy(update={"image_ext": "png"})

    def expected(self) -> dict[str, int]:
        """Samples per task the finished synthesis stages promise."""
        want: Counter[str] = Counter()
        for d, tasks in self._sources():
            c = storage.read_marker(d)["counts"]
            for t in tasks:
                if t in MAP_TASKS:
                    want[t] += expected_samples(c, t)
                elif t == "inpainting_text_guided":
                    want[t] += c.get("named", 0)  # only named objects have a caption
                elif t in TEXT_TASKS:
                    want[t] += sum(c["samples"].values())
                else:
                    want[t] += c["samples"] if t in OBJECT_TASKS else c["samples"].get(t, 0)
        return dict(want)

    def _samples(self) -> Iterator[AceSample]:
        for d, tasks in self._sources():
            for rec in iter_records(d):
                yield from (face_samples(rec) if d == self.layout.synth(FacePairsStage.kind) else record_samples(rec, tasks))

    instruction_counts: Counter[str]

    def _instructed(self) -> Iterator[AceSample]:
        chat = self._chat()
        try:
            for sample in self._samples():
                yield sample if chat is None else chat_instruction(sample, chat, self.instruction_counts)
        finally:
            if chat is not None:
                chat.close()
                self.instruction_counts.update(chat.counts)

    def _packed(self, gate: Gate) -> Iterator[AceSample]:
        """The samples, instructed by the chat endpoint when configured, that pass the supervision gate (which
        checks the instruction written); raises (before the shard writer's marker) unless every sample the
        stages promise reached the gate."""
        want = self.expected()
        yield from gate(self._instructed())
        reconcile(self.label, want, gate)

    def run(self, k: int) -> UnitReport:
        self.instruction_counts = Counter()
        for d in self.inputs():
            if storage.read_marker(d) is None:
                raise FileNotFoundError(f"no complete synthesis under {d}")
        gate = Gate(self.cfg.supervision, self._shard_config())
        rep = write_shard_set(self._packed(gate), self.out, self._shard_config(), extend=True,
                              marker_extra=lambda: {"supervision": gate.summary(),
                                                    "instructions": dict(self.instruction_counts)})
        self.stamp(self.out)
        counts = {"samples": rep.samples, "shards": rep.shards, "kept_shards": rep.resumed_shards,
                  "supervision_dropped": supervision_dropped(self.out)}
        if self.instruction_counts:
            counts["instructions"] = dict(self.instruction_counts)
            print(f"{self.label}: instructions {dict(self.instruction_counts)}")
        return UnitReport(stage=self.label, unit=k, counts=counts)

    def report(self) -> StageReport | None:
        return shard_set_report(self, self.out)


def chat_instruction(sample: AceSample, writer, counts: Counter) -> AceSample:
    """The sample with the chat endpoint's instruction for its edit image -> target (single-input samples;
    lineage gains the writer), or unchanged (a multi-input sample, no instruction, or an endpoint error):
    every sample is counted under `chat`, `template_multi_input`, `template_no_reply` or `chat_fallback` (the
    endpoint failed or its breaker is open)."""
    from mining.instructions import InstructionError
    from schemas.records import PairRecord

    if len(sample.units) != 1:
        counts["template_multi_input"] += 1
        return sample
    src = sample.lineage.source_ids[0] if sample.lineage.source_ids else sample.key
    pair = PairRecord(pair_id=sample.key, source_id=src, target_id=src, task=sample.task, similarity=0.0)
    try:
        ins = writer.write(pair, sample.units[0].image, sample.target.image, sample.units[0].image_ext,
                           sample.target.image_ext)
    except InstructionError:
        counts["chat_fallback"] += 1
        return sample
    if ins is None:
        counts["template_no_reply"] += 1
        return sample
    counts["chat"] += 1
    gens = [*sample.lineage.generators, Generator(name=writer.name.rsplit(":", 1)[0], version=writer.name.rsplit(":", 1)[-1])]
    return sample.model_copy(update={"instruction": ins.instruction, "caption": ins.caption,
                                     "lineage": sample.lineage.model_copy(update={"generators": gens})})
