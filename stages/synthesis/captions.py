"""Text-to-image samples from captioned catalog images: <root>/synth/captions/.

ACE B.1 captions its images with an MLLM; the caption is the prompt, the image the target, and nothing is
an input (0 units). Captions come from the chat endpoint or the local vision-language model
(mining/instructions/captions.py; `mining.instructions.backend` chat or local_vlm): with any other backend
the stage refuses to run, since a template caption is no caption. One item per `synthesis.partition_size`
catalog rows (`synthesis.fraction` and `max_images` choose them). Counts: images = read + skipped; read =
samples + dropped (no_caption: the model declined; caption_failed: the call failed or the reply was
invalid; caption_names_an_image: the caption holds an image indicator such as {image}).

The captions (`captions()`) are also the bridge to other tasks: at packing, `{caption}` in an instruction is
filled with its image's caption (fill_caption), and a map -> image sample (control_<map>) of a captioned image
says what the image shows (CAPTIONED_CONTROL), as ACE's controllable generation does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Iterator

from mining.instructions.writers import InstructionError
from runtime.stage import ItemReport, Resources
from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role
from stages.synthesis.parts import (PartStage, check_sum, count_reasons, digest, iter_records, load_source, png,
                                    write_records)

CAPTION_TASKS = ("text_to_image",)
CAPTION_CLAUSE = " The image shows: {caption}."  # added to a control_<map> sample's instruction
_NOT_CAPTIONED = ("control_degradation", "control_grayscale", "control_multi")  # restore / colourise the input itself
_INDICATOR = re.compile(r"\{(image\d*|mask|ref_image|caption)\}|<img>")


class CaptionStage(PartStage):
    name = "synth-captions"
    kind = "captions"
    resources = Resources(cpus=1.0)
    produces, shard_set = CAPTION_TASKS, "synthesis"
    key, config_section, ui_report = "captions", "synthesis", "records"

    @classmethod
    def summary(cls, c: dict, group: dict, name: str) -> str:
        return f"synthesis: text_to_image {c['samples']} captioned (dropped {c['dropped']})"

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def settings(self) -> dict:
        s, ic = self.cfg.synthesis, self.cfg.mining.instructions
        model = ic.model if ic.backend == "chat" else ic.local_model
        return {"captioner": [ic.backend, ic.base_url if ic.backend == "chat" else "", model],
                "max_side": s.max_side, "max_images": s.max_images, "fraction": s.fraction,
                "partition_size": s.partition_size, "max_chars": ic.max_instruction_chars}

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    def captioner_name(self) -> str:
        """name:version of the captioner (without loading it), for the lineage of the samples it captions."""
        ic = self.cfg.mining.instructions
        return f"chat-caption:{ic.model}" if ic.backend == "chat" else f"local-vlm-caption:{ic.local_model}"

    def worker_model(self):
        """The local VLM of the local_vlm backend (a GPU where the worker has one); None for the endpoint."""
        ic = self.cfg.mining.instructions
        if ic.backend != "local_vlm" or not ic.local_model:
            return None
        if getattr(self, "_vlm", None) is None:
            from mining.instructions.local_vlm import local_model

            self._vlm = local_model(ic, self.cfg.models_dir)
        return self._vlm

    def setup(self) -> None:
        if (model := self.worker_model()) is not None:
            model.setup()

    def captioner(self):
        from mining.instructions.captions import LocalCaptioner, make_captioner

        ic = self.cfg.mining.instructions
        if (model := self.worker_model()) is not None:  # loaded once per worker, shared by its items
            return LocalCaptioner(model, batch_size=ic.local_batch_size, max_chars=ic.max_instruction_chars,
                                  name=self.captioner_name())
        return make_captioner(ic, self.layout.instruction_cache, self.cfg.models_dir)

    def run(self, k: int) -> ItemReport:
        part = self.parts()[k]
        recs = self.catalog_records(k)
        skipped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        loaded = []
        for rec in recs:
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
            else:
                loaded.append((rec.id, png(img)))
        captioner = self.captioner()
        rows: list[dict] = []
        try:
            gens = json.dumps([captioner.name.rsplit(":", 1)])
            for (rid, data), cap in zip(loaded, captioner.caption_many([(i, d, "png") for i, d in loaded]), strict=True):
                if isinstance(cap, InstructionError):
                    dropped["caption_failed"] += 1
                elif cap is None:
                    dropped["no_caption"] += 1
                elif _INDICATOR.search(cap):
                    dropped["caption_names_an_image"] += 1
                else:
                    rows.append({"sample_id": digest([rid, cap, self.settings()], 20), "kind": "text_to_image",
                                 "source_id": rid, "edit_png": None, "target_png": data, "mask_png": None,
                                 "object_png": None, "instructions": json.dumps({"text_to_image": cap}),
                                 "generators": gens, "scores": json.dumps({}), "labels": None})
        finally:
            captioner.close()
        counts = {"images": len(recs), "read": len(loaded), "skipped": count_reasons(skipped),
                  "expected": len(loaded), "samples": {"text_to_image": len(rows)} if rows else {},
                  "dropped": count_reasons(dropped), "calls": dict(sorted(captioner.counts.items()))}
        self.reconcile(counts)
        write_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        if not c:  # no catalog rows: no parts
            return
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")
        check_sum(self.label, c["expected"], sum(c["samples"].values()) + sum(c["dropped"].values()), "images read")

    def samples(self, rec: dict, tasks: list[str]) -> Iterator[AceSample]:
        if "text_to_image" not in tasks:
            return
        caption = json.loads(rec["instructions"])["text_to_image"]
        lineage = Lineage(source_ids=[rec["source_id"]],
                          generators=[Generator(name=n, version=v) for n, v in json.loads(rec["generators"])])
        yield AceSample(key=f"text_to_image-{rec['sample_id']}", task="text_to_image", instruction=caption,
                        caption=caption, units=[], target=ConditionUnit(role=Role.TARGET, image=rec["target_png"]),
                        lineage=lineage)


def captions(stage_dir: str) -> dict[str, str]:
    """image id -> caption, of a finished caption stage."""
    return {r["source_id"]: json.loads(r["instructions"])["text_to_image"]
            for r in iter_records(stage_dir, columns=["source_id", "instructions"])}


def fill_caption(instruction: str, caption: str | None) -> str | None:
    """`{caption}` in an instruction replaced by the image's caption; None when it asks for one and there is
    none (such a sample keeps its other instruction or is not packed, never a made-up caption)."""
    if "{caption}" not in instruction:
        return instruction
    return None if not caption else instruction.replace("{caption}", caption.rstrip("."))


def with_caption(sample: AceSample, caps: dict[str, str], generator: Generator | None, counts: Counter) -> AceSample:
    """The sample with its image's caption where its instruction asks for one ({caption}) or it is a map ->
    image sample (counted: captioned); an instruction asking for a caption its image does not have is kept
    as it is and counted (caption_missing): the pack's promised samples are all packed."""
    cap = caps.get(sample.lineage.source_ids[0]) if sample.lineage.source_ids else None
    text = sample.instruction
    if "{caption}" not in text and cap and sample.task.startswith("control_") and sample.task not in _NOT_CAPTIONED:
        text = text + CAPTION_CLAUSE
    if "{caption}" not in text:
        return sample
    filled = fill_caption(text, cap)
    if filled is None:
        counts["caption_missing"] += 1
        return sample
    counts["captioned"] += 1
    gens = sample.lineage.generators + ([generator] if generator else [])
    return sample.model_copy(update={"instruction": filled, "caption": sample.caption or cap,
                                     "lineage": sample.lineage.model_copy(update={"generators": gens})})
