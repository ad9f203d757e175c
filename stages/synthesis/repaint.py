"""Repainting and outpainting samples from random masks: <root>/synth/repaint/.

Inpainting: a LaMa-style random mask (irregular strokes and boxes); outpainting: a band along a random side.
The target is the source; the edit image is the source with the masked pixels blanked (black), so no
reader that ignores the mask sees the answer; outside the mask both are the source's pixels. One item per
`synthesis.partition_size` catalog rows (no model). Counts: for each task, images read = samples + dropped.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mining.image.random_masks import outpaint_mask, repaint_mask
from mining.instructions.synthesis import TEMPLATER, synth_instruction
from runtime.stage import ItemReport, Resources
from stages.synthesis.parts import (PartStage, check_sum, count_reasons, digest, load_source, png,
                               write_records)

REPAINT_TASKS = ("inpainting", "outpainting")
MASKER = ("random-masks", "1")


class RepaintStage(PartStage):
    name = "synth-repaint"
    kind = "repaint"
    resources = Resources(cpus=1.0)
    produces, shard_set = REPAINT_TASKS, "synthesis"
    key, config_section, ui_report = "repaint", "synthesis", "records"

    @classmethod
    def summary(cls, c: dict, group: dict, name: str) -> str:
        return f"synthesis: repainting {c['samples']} (dropped {c['dropped']})"

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def tasks(self) -> list[str]:
        return [t for t in self.cfg.synthesis.tasks if t in REPAINT_TASKS]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"tasks": self.tasks(), "repaint_area": list(s.repaint_area), "seed": s.seed,
                "outpaint_extent": list(s.outpaint_extent), "max_side": s.max_side, "max_images": s.max_images,
                "fraction": s.fraction, "partition_size": s.partition_size}

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    def run(self, k: int) -> ItemReport:
        part = self.parts()[k]
        s = self.cfg.synthesis
        recs = self.catalog_records(k)
        skipped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        samples: Counter[str] = Counter()
        rows: list[dict] = []
        gens = json.dumps([list(MASKER), list(TEMPLATER)])
        for rec in recs:
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
                continue
            h, w = img.shape[:2]
            target = png(img)
            for task in self.tasks():
                rng = np.random.default_rng([s.seed, int(rec.id[:15], 16), REPAINT_TASKS.index(task)])
                side, scores = None, {}
                if task == "inpainting":
                    mask, shape = repaint_mask(h, w, rng, s.repaint_area)
                    if mask is None:
                        dropped[f"{task}: no_mask_in_area"] += 1
                        continue
                    scores["strokes"] = float("strokes" in shape)
                    scores["boxes"] = float("boxes" in shape)
                else:
                    mask, side, extent = outpaint_mask(h, w, rng, s.outpaint_extent)
                    scores["extent"] = extent
                scores["mask_frac"] = float(mask.mean())
                edit = img.copy()
                edit[mask] = 0
                sid = digest([rec.id, task, self.settings()], 20)
                rows.append({"sample_id": sid, "kind": task, "source_id": rec.id, "edit_png": png(edit),
                             "target_png": target, "mask_png": png((mask * 255).astype(np.uint8)),
                             "object_png": None,
                             "instructions": json.dumps({task: synth_instruction(task, sid, s.seed, side=side)}),
                             "generators": gens, "scores": json.dumps({**scores, **({"side_" + side: 1.0}
                                                                                   if side else {})})})
                samples[task] += 1
        read = len(recs) - sum(skipped.values())
        counts = {"images": len(recs), "read": read, "skipped": count_reasons(skipped),
                  "expected": read * len(self.tasks()), "samples": count_reasons(samples), "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")
        check_sum(self.label, c["expected"], sum(c["samples"].values()) + sum(c["dropped"].values()),
                  "samples per task")
