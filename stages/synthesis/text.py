"""OCR-verified text pairs (ACE App. B.5.1): <root>/synth/text/.

Per image, OCR runs once. Text found: a removal candidate. Each detection is confirmed first (score,
characters, a second read at another scale: mining/text/confirm.py); with none confirmed the image is
dropped as `text_unconfirmed` (texture read as text). The confirmed boxes, dilated, are inpainted; the
result must pass the removal checks (mining/objects/verify.py) and OCR must find no text in it (a read
inside the mask, or a confirmed one elsewhere), else the candidate is dropped with the reason
(`text_remains`, `unchanged`, `seam`, ...). No text found: a render
candidate. English or Chinese text is drawn (content, font, size, colour and position recorded); OCR must
read it back within `synthesis.text.max_ned`, else `readback_mismatch` (or `no_fit`: nothing fits).

Direction: every record is stored as a removal, edit = the image with text, target = the image without,
mask = the text's region. A `text_removal` record's edit is the source photo (target inpainted); a
`text_render` record's edit is the rendered image (target = the source photo). Packing gives from each
record `text_removal` (edit -> target) and `text_addition` (the exact reverse), as for object records.

Counts: images = read + skipped; read = with_text + without_text; with_text = removal samples + removal
drops; without_text = render samples + render drops.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mining.objects.inpaint import dilate, make_inpainter
from mining.text.ocr import boxes_mask, make_ocr
from mining.objects.verify import VERIFIER, verify_removal
from mining.text.confirm import CONFIRMER, Rules, confirm_hit, confirm_hits, inside
from mining.instructions.text import TEXT_TEMPLATER, grid_position, text_instruction
from mining.text.render import COLOURS, RENDERER, render_text
from schemas.config import TEXT_TASKS
from runtime.stage import ItemReport
from stages.synthesis.parts import (PartStage, check_sum, count_reasons, digest, load_source, png, selected,
                               synth_ranges, write_records)

RECORD_KINDS = ("text_removal", "text_render")


class TextStage(PartStage):
    name = "synth-text"
    kind = "text"
    produces, shard_set = TEXT_TASKS, "synthesis"
    key, config_section, ui_report = "text", "synthesis.text", "records"

    @staticmethod
    def expected(counts: dict, task: str) -> int:
        return sum(counts["samples"].values())  # a record is a removal: each gives both tasks

    @classmethod
    def summary(cls, t: dict, group: dict, name: str) -> str:
        return (f"synthesis: text from {t['read']} images ({t['with_text']} with text): {t['samples']} "
                f"(dropped {t['dropped']})")
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        t = cfg.synthesis.text
        self.ocr = make_ocr(t.ocr, cfg.models_dir, t.min_score, t.min_chars)  # cheap: config only
        self.inpainter = make_inpainter(cfg.synthesis.inpainter, cfg.models_dir)
        name = cfg.synthesis.verify.artefact_classifier
        self.artefacts = None
        if name:
            from mining.models.artefacts import ArtefactClassifier  # imports torch: only when configured

            self.artefacts = ArtefactClassifier(cfg.models_dir, name)

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def tasks(self) -> list[str]:
        return [t for t in self.cfg.synthesis.tasks if t in TEXT_TASKS]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"ocr": [self.ocr.name, self.ocr.version], "inpainter": [self.inpainter.name, self.inpainter.version],
                "text": s.text.model_dump(), "verify": s.verify.model_dump(), "tasks": self.tasks(), "seed": s.seed,
                "artefacts": self.artefacts.digest() if self.artefacts is not None else None,
                "max_side": s.max_side, "max_images": s.max_images, "fraction": s.fraction,
                "partition_size": s.partition_size}

    def worker_model(self):
        return self.ocr

    def setup(self) -> None:
        self.ocr.setup()
        self.inpainter.setup()
        if self.artefacts is not None:
            self.artefacts.setup()

    def _ranges(self) -> list[tuple[int, int]]:
        """The synthesis items, cut at `text.max_images` catalog rows (OCR is the CPU budget)."""
        if getattr(self, "_range_cache", None) is None:
            cap = self.cfg.synthesis.text.max_images
            self._range_cache = [(lo, min(hi, cap) if cap else hi) for lo, hi in synth_ranges(self.cfg)
                                 if cap is None or lo < cap]
        return self._range_cache

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    def _selected(self, recs):
        f = self.cfg.synthesis.text.fraction
        if f is None:
            return selected(recs, self.cfg)
        return recs if f >= 1 else [r for r in recs if int(r.id[:8], 16) < f * 16**8]

    def run(self, k: int) -> ItemReport:
        from stages.corpus.ingest import catalog_slice

        part = self.parts()[k]
        self._item_settings = self.settings()  # once per item: every sample id digests it
        lo, hi = self._ranges()[k]
        recs = self._selected(catalog_slice(self.cfg.root, lo, hi))
        skipped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        samples: Counter[str] = Counter()
        found = Counter()
        rows: list[dict] = []
        for rec in recs:
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
                continue
            hits = self.ocr(img)
            found["with_text" if hits else "without_text"] += 1
            row, reason = (self._removal if hits else self._render)(rec, img, hits)
            kind = RECORD_KINDS[0] if hits else RECORD_KINDS[1]
            if row is None:
                dropped[f"{kind}: {reason}"] += 1
            else:
                rows.append(row)
                samples[kind] += 1
        counts = {"images": len(recs), "read": len(recs) - sum(skipped.values()),
                  "skipped": count_reasons(skipped),
                  "with_text": found["with_text"], "without_text": found["without_text"],
                  "samples": {k: samples[k] for k in RECORD_KINDS}, "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def _row(self, rec, kind: str, with_text: np.ndarray, without: np.ndarray, mask: np.ndarray, content: str,
             colour: str | None, extra_gens: list, scores: dict, position: str | None = None) -> dict:
        s = self.cfg.synthesis
        sid = digest([rec.id, kind, self._item_settings], 20)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        position = position or grid_position(box, mask.shape)
        gens = [[self.ocr.name, self.ocr.version], *extra_gens, list(VERIFIER), list(TEXT_TEMPLATER)]
        return {"sample_id": sid, "kind": kind, "source_id": rec.id, "edit_png": png(with_text),
                "target_png": png(without), "mask_png": png((mask * 255).astype(np.uint8)), "object_png": None,
                "instructions": json.dumps({t: text_instruction(t, sid, s.seed, content, position, colour)
                                            for t in self.tasks()}, ensure_ascii=False),
                "generators": json.dumps(gens), "scores": json.dumps(scores, ensure_ascii=False),
                "labels": json.dumps({"text": content, "position": position, **({"colour": colour} if colour else {})},
                                     ensure_ascii=False)}

    def _removal(self, rec, img: np.ndarray, hits) -> tuple[dict | None, str]:
        s = self.cfg.synthesis
        rules = Rules.of(s.text)
        hits, _, confirmed = confirm_hits(self.ocr, img, hits, rules)
        if not hits:
            return None, "text_unconfirmed"
        mask = dilate(boxes_mask(hits, img.shape[:2]), s.text.dilate_px)
        result = self.inpainter(img, mask)
        reason, scores = verify_removal(img, result, mask, s.verify)
        if reason is None and self.artefacts is not None:  # the removals' artefact check, when configured
            scores["artefact_prob"] = float(self.artefacts([result])[0])
            reason = "artefact" if scores["artefact_prob"] > s.verify.max_artefact_prob else None
        if reason is not None:
            return None, reason
        if any(inside(h, mask) or confirm_hit(self.ocr, result, h, rules)[0] is None for h in self.ocr(result)):
            return None, "text_remains"
        scores.update({"ocr_boxes": float(len(hits)), "ocr_score_min": min(h.score for h in hits),
                       "mask_frac": float(mask.mean()), "ocr_after": 0.0, **confirmed})
        content = " ".join(h.text for h in hits)
        return self._row(rec, "text_removal", img, result, mask, content, None,
                         [[self.inpainter.name, self.inpainter.version], list(CONFIRMER)], scores), ""

    def _render(self, rec, img: np.ndarray, _hits) -> tuple[dict | None, str]:
        from mining.text.ocr import normalized_edit_distance

        t = self.cfg.synthesis.text
        rng = np.random.default_rng([self.cfg.synthesis.seed, int(rec.id[:15], 16), 7])
        script = str(rng.choice(t.scripts))
        drawn = render_text(img, script, rng, min_px=t.min_font_px)
        if drawn is None:
            return None, "no_fit"
        out, changed, info = drawn
        read = "".join(h.text for h in self.ocr(out))
        ned = normalized_edit_distance(read, info.content)
        if ned > t.max_ned:
            return None, "readback_mismatch"
        mask = dilate(changed, t.dilate_px)  # outside the mask the two images are the same pixels
        # lineage scores are numbers: the content, colour and position are named in the instructions, the font
        # in the renderer's generator entry
        rgb = COLOURS[info.colour]
        scores = {"readback_ned": ned, "font_px": float(info.size), "mask_frac": float(mask.mean()),
                  "script_zh": float(info.script == "zh"), "colour_r": float(rgb[0]), "colour_g": float(rgb[1]),
                  "colour_b": float(rgb[2]),
                  **{f"box_{n}": float(v) for n, v in zip(("x0", "y0", "x1", "y1"), info.box)}}
        gen = [RENDERER[0], f"{RENDERER[1]}:{info.font}"]
        return self._row(rec, "text_render", out, img, mask, info.content, info.colour, [gen], scores,
                         info.position), ""

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")
        check_sum(self.label, c["read"], c["with_text"] + c["without_text"], "images read")
        for kind, whole in (("text_removal", c["with_text"]), ("text_render", c["without_text"])):
            drops = {r: n for r, n in c["dropped"].items() if r.startswith(kind + ": ")}
            check_sum(self.label, whole, c["samples"][kind] + sum(drops.values()), f"{kind} candidates")
