"""Object removal pairs: inpaint the kept masks of each segmented image, verify: <root>/synth/objects/.

One item per segmentation part (the same catalog rows); a model stage (each worker loads the inpainter
once). Per image the best-scored kept masks (up to `synthesis.objects_per_image`) are dilated and
inpainted; outside the dilated mask the result is the source's pixels. Every candidate mask ends as a
record or a drop with a reason: candidates = samples + dropped by reason. A record is a removal
(edit = source, target = object removed); packing also gives its reverse (the addition) and the layer
tasks (decouple: the object on white; fusion: object + background -> the source). A kept object is named
by the object namer (SigLIP zero-shot, or unnamed: generic wording); a named one also gives a text-guided
inpainting sample ("fill the masked region with a <label>").
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.compute as pc

from mining.objects.inpaint import dilate, make_inpainter
from mining.objects.names import make_namer, object_crop
from mining.instructions.synthesis import TEMPLATER, synth_instruction
from mining.objects.verify import VERIFIER, refound_iou, verify_removal
from schemas.records import Generator
from store import storage
from stages.synthesis.segment import REGIONS, SegmentStage, segmenter_for
from runtime.stage import ItemReport
from stages.synthesis.parts import (FILTER_GENERATOR, PartStage, check_sum, count_reasons, digest, load_source, png,
                               unpng, write_records)

OBJECT_TASKS = ("object_removal", "object_addition", "layer_decouple", "layer_fusion", "inpainting_text_guided")


class ObjectsStage(PartStage):
    name = "synth-objects"
    kind = "objects"
    produces, needs, shard_set = OBJECT_TASKS, ("synth-segment",), "synthesis"
    key, config_section, ui_report = "objects", "synthesis", "records"

    @staticmethod
    def expected(counts: dict, task: str) -> int:
        return counts.get("named", 0) if task == "inpainting_text_guided" else counts["samples"]  # named: a caption

    @classmethod
    def summary(cls, o: dict, group: dict, name: str) -> str:
        c = group["segment"]
        return (f"synthesis: {c['segmented']} images segmented, {c['regions']} regions, {c['kept']} kept "
                f"(dropped {c['dropped']}); {o['samples']} object removals (dropped {o['dropped']})")
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        self.inpainter = make_inpainter(cfg.synthesis.inpainter, cfg.models_dir)  # cheap: config only
        self.namer = make_namer(cfg.synthesis.object_namer, cfg.models_dir, cfg.synthesis.object_name_threshold)
        self.segments = SegmentStage(cfg)
        self.refinder = segmenter_for(cfg) if cfg.synthesis.verify.refind_iou is not None else None
        name = cfg.synthesis.verify.artefact_classifier
        self.artefacts = None
        if name:
            from mining.models.artefacts import ArtefactClassifier  # imports torch: only when configured

            self.artefacts = ArtefactClassifier(cfg.models_dir, name)

    def inputs(self) -> list[str]:
        return [self.segments.out]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"inpainter": [self.inpainter.name, self.inpainter.version], "dilate_px": s.dilate_px,
                "namer": [self.namer.name, getattr(self.namer, "threshold", None), self.namer.identity()],
                "artefacts": self.artefacts.digest() if self.artefacts is not None else None,
                "objects_per_image": s.objects_per_image, "verify": s.verify.model_dump(), "seed": s.seed,
                "tasks": [t for t in s.tasks if t in OBJECT_TASKS], "segments": self.segments.settings()}

    def worker_model(self):
        return self.inpainter

    def setup(self) -> None:
        self.inpainter.setup()
        self.namer.setup()
        if self.artefacts is not None:
            self.artefacts.setup()
        if self.refinder is not None:
            self.refinder.setup()

    def setup_checks(self) -> None:
        """Load what post_checks needs (for a stage that reuses this stage's checks)."""
        if self.artefacts is not None:
            self.artefacts.setup()
        if self.refinder is not None:
            self.refinder.setup()

    def post_checks(self, result, obj, scores: dict) -> str | None:
        """The configured checks after verify_removal: the segmenter must not find the object again
        (`verify.refind_iou`), the artefact classifier must pass the result; their scores go into `scores`."""
        v = self.cfg.synthesis.verify
        if self.refinder is not None:
            scores["refound_iou"] = refound_iou(self.refinder(result), obj)
            if scores["refound_iou"] > v.refind_iou:
                return "refound"
        if self.artefacts is not None:
            scores["artefact_prob"] = float(self.artefacts([result])[0])
            if scores["artefact_prob"] > v.max_artefact_prob:
                return "artefact"
        return None

    def _segment_part(self, k: int) -> str:
        m = storage.read_marker(self.segments.out)
        if m is None:
            raise FileNotFoundError(f"no complete segmentation under {self.segments.out}")
        return storage.join(self.segments.out, m["parts"][k])

    def _ranges(self):
        return self.segments._ranges()

    def item_key(self, k: int) -> str:
        return self._segment_part(k).rsplit("/", 1)[-1]

    def run(self, k: int) -> ItemReport:
        from stages.corpus.ingest import catalog_slice

        part = self.parts()[k]
        s = self.cfg.synthesis
        table = storage.read_parquet(storage.join(self._segment_part(k), REGIONS))
        meta = table.schema.metadata or {}
        seg_gen = Generator(name=meta[b"segmenter"].decode(), version=meta[b"segmenter_version"].decode())
        kept = table.filter(pc.field("kept")).to_pylist()
        del table
        gens = [seg_gen, FILTER_GENERATOR, Generator(name=self.inpainter.name, version=self.inpainter.version),
                Generator(name=VERIFIER[0], version=VERIFIER[1]),
                *([Generator(name=self.artefacts.name, version=self.artefacts.version)] if self.artefacts else []),
                Generator(name=self.namer.name, version=self.namer.version),
                Generator(name=TEMPLATER[0], version=TEMPLATER[1])]
        by_image: dict[str, list[dict]] = {}
        for row in kept:
            by_image.setdefault(row["image_id"], []).append(row)
        lo, hi = self._ranges()[k]
        dropped: Counter[str] = Counter()
        rows: list[dict] = []
        named = 0
        tasks = [t for t in s.tasks if t in OBJECT_TASKS]
        settings = self.settings()
        for rec in catalog_slice(self.cfg.root, lo, hi):
            cands = sorted(by_image.pop(rec.id, []), key=lambda r: (-r["score"], r["region"]))
            if not cands:
                continue
            dropped["over_per_image_cap"] += max(0, len(cands) - s.objects_per_image)
            img, why = load_source(rec, self.cfg)
            if img is None:
                dropped[why] += min(len(cands), s.objects_per_image)
                continue
            source_png = png(img)
            kept_here: list[tuple[dict, object, object, object, dict]] = []
            for row in cands[: s.objects_per_image]:
                obj = unpng(row["mask_png"]) > 0
                mask = dilate(obj, s.dilate_px)
                result = self.inpainter(img, mask)
                reason, scores = verify_removal(img, result, mask, s.verify)
                if reason is None:
                    reason = self.post_checks(result, obj, scores)
                if reason is not None:
                    dropped[reason] += 1
                    continue
                kept_here.append((row, obj, mask, result, scores))
            # a detector's label names its object; the namer names the others (class-agnostic masks)
            unnamed = [obj for row, obj, _, _, _ in kept_here if row.get("label") is None]
            guessed = iter(self.namer([object_crop(img, obj) for obj in unnamed]) if unnamed else [])
            names = [(row["label"], row["label_score"]) if row.get("label") is not None else next(guessed)
                     for row, _, _, _, _ in kept_here]
            for (row, obj, mask, result, scores), (label, prob) in zip(kept_here, names):
                sid = digest([rec.id, row["region"], settings], 20)
                todo = [t for t in tasks if label is not None or t != "inpainting_text_guided"]
                named += label is not None
                rows.append({"sample_id": sid, "kind": "object", "source_id": rec.id, "edit_png": source_png,
                             "target_png": png(result), "mask_png": png((mask * 255).astype("uint8")),
                             "object_png": png((obj * 255).astype("uint8")),
                             "instructions": json.dumps({t: synth_instruction(t, sid, s.seed, object_name=label)
                                                         for t in todo}),
                             "generators": json.dumps([[g.name, g.version] for g in gens]),
                             "scores": json.dumps({"segment_score": row["score"], "area_frac": row["area_frac"],
                                                   "box_fill": row["box_fill"], **scores,
                                                   **({"objectness": row["objectness"]}
                                                      if row.get("objectness") is not None else {}),
                                                   **({"object_name_prob": prob} if prob is not None else {})}),
                             "labels": json.dumps({"object_name": label}) if label is not None else None})
        if by_image:
            raise RuntimeError(f"{self.label}: masks of images outside this item's catalog rows: {sorted(by_image)[:3]}")
        counts = {"candidates": len(kept), "samples": len(rows), "named": named, "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["candidates"], c["samples"] + sum(c["dropped"].values()), "candidate masks")
        if not 0 <= c.get("named", 0) <= c["samples"]:
            raise RuntimeError(f"{self.label}: {c.get('named')} named objects among {c['samples']} samples")
