"""Style pairs (ACE B.4.2): <root>/synth/style/.

Units are catalog slices of `synthesis.style.partition_size` images, not K-means clusters: the clusters group
images by content (SigLIP), and one style cuts across contents, so a cluster would split a style family; every
image is read (`synthesis.fraction` does not apply: a family is found only when seen whole). Per unit: style
features of every image (only the vectors are held), band union-find at `style.threshold`; the unit's style
is its largest set (at least `style.min_set` images) that the stylisation bank can render. ACE keeps the
largest set outright and renders content in its style with a generative model; no such model runs offline,
and a corpus' largest set is often plain photographs, which no bank operation makes, so sets are tried
largest first (up to `style.max_sets_tried`). Up to `style.contents_per_unit` images outside the set
(seeded) are restyled: the target is the classical stylisation of the bank (mining/stylize.py) whose output
is nearest in style to the set's mean feature, kept only when that cosine reaches `style.min_match` (the
bank operation and the match are in lineage). A kept content gives `style_transfer_reference` (content + a
set member as the style reference -> the target) and `style_editing` (content -> target, the style named).
Counts: contents = pairs + dropped by reason; images = read + skipped by reason; read = set + contents.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mining.band import band_edges, disjoint_sets
from mining.chain_instructions import CHAIN_TEMPLATER, style_instruction
from mining.style import make_style_extractor
from mining.stylize import STYLES, STYLIZER, stylize
from tasks import storage
from tasks.chain_records import CHAINS, write_chain_records
from tasks.stage import Resources, UnitReport
from tasks.synth_parts import PartStage, check_sum, count_reasons, digest, load_source, png

STYLE_TASKS = ("style_editing", "style_transfer_reference")
UNION_FIND = ("style-band-union-find", "1")


class StyleStage(PartStage):
    name = "synth-style"
    kind = "style"
    table = CHAINS
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        s = cfg.synthesis
        self.extractor = make_style_extractor(s.style.extractor, cfg.models_dir, seed=s.seed,
                                              sha256=s.style.vgg_sha256)  # config only

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def tasks(self) -> list[str]:
        return [t for t in self.cfg.synthesis.tasks if t in STYLE_TASKS]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"tasks": self.tasks(), "style": s.style.model_dump(), "seed": s.seed, "max_side": s.max_side,
                "max_images": s.max_images, "extractor": [self.extractor.name, self.extractor.version]}

    def worker_resources(self) -> Resources:
        r = self.extractor.resources()
        return Resources(cpus=r.cpus, gpus=r.gpus)

    def setup(self) -> None:
        self.extractor.setup()

    def _ranges(self) -> list[tuple[int, int]]:
        if getattr(self, "_range_cache", None) is None:
            from tasks.embed import partition_ranges
            from tasks.ingest import catalog_generations

            cap = self.cfg.synthesis.max_images
            ranges = partition_ranges(catalog_generations(self.cfg.root), self.cfg.synthesis.style.partition_size)
            self._range_cache = [(lo, min(hi, cap) if cap else hi) for lo, hi in ranges if cap is None or lo < cap]
        return self._range_cache

    def unit_key(self, k: int) -> str:
        return self.catalog_key(k)

    def _match(self, content: np.ndarray, centre: np.ndarray) -> tuple[str, np.ndarray, float]:
        """The bank stylisation of `content` nearest in style to `centre` (a unit vector)."""
        outs = {name: stylize(name, content) for name in STYLES}
        feats = self.extractor(list(outs.values()))
        sims = feats @ centre
        best = int(np.argmax(sims))
        name = list(outs)[best]
        return name, outs[name], float(sims[best])

    def _renderable_set(self, sets: list[np.ndarray], x: np.ndarray, recs: list, k: int):
        """(members, unit centre, sets tried): the largest set (of at least `style.min_set`) whose style the
        bank renders: its best stylisation of a probe image outside the set reaches `style.min_match`.
        ACE keeps the largest set outright; here the largest may be a style no bank operation can make
        (plain photographs), and its pairs would all be dropped."""
        st = self.cfg.synthesis.style
        tried = 0
        for members in sorted((m for m in sets if len(m) >= st.min_set), key=lambda m: (-len(m), int(m[0]))):
            if tried >= st.max_sets_tried:
                break
            tried += 1
            outside = np.setdiff1d(np.arange(len(x)), members)
            if len(outside) == 0:
                continue
            centre = x[members].mean(0)
            centre = centre / (np.linalg.norm(centre) + 1e-8)
            rng = np.random.default_rng([self.cfg.synthesis.seed, k, int(members[0])])
            probe = int(outside[rng.integers(len(outside))])
            img, _ = load_source(recs[probe], self.cfg)
            if img is not None and self._match(img, centre)[2] >= st.min_match:
                return members, centre, tried
        return np.zeros(0, np.int64), None, tried

    def run(self, k: int) -> UnitReport:
        from tasks.ingest import catalog_slice

        part = self.parts()[k]
        done = storage.read_marker(part)
        if done is not None:
            return UnitReport(stage=self.label, unit=k, counts=done["counts"])
        self.setup()
        s, st = self.cfg.synthesis, self.cfg.synthesis.style
        lo, hi = self._ranges()[k]
        recs = catalog_slice(self.cfg.root, lo, hi)
        skipped: Counter[str] = Counter()
        ids, feats = [], []
        for rec in recs:  # one image in memory at a time: only its feature vector is kept
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
                continue
            ids.append(rec)
            feats.append(self.extractor([img])[0])
        x = np.stack(feats).astype(np.float32) if feats else np.zeros((0, 1), np.float32)
        sets = disjoint_sets(len(x), band_edges(x, st.threshold, 1.0)) if len(x) > 1 else []
        members, centre, tried = self._renderable_set(sets, x, ids, k)
        others = np.setdiff1d(np.arange(len(x)), members)
        dropped: Counter[str] = Counter()
        rows: list[dict] = []
        if len(members) == 0:
            dropped["no_renderable_style_set"] += len(others)
            chosen = np.zeros(0, np.int64)
        else:
            rng = np.random.default_rng([s.seed, k, len(x)])
            chosen = np.sort(rng.permutation(others)[: st.contents_per_unit])
            dropped["over_unit_cap"] += len(others) - len(chosen)
        settings = self.settings()
        for c in chosen.tolist():
            content, why = load_source(ids[c], self.cfg)
            rng = np.random.default_rng([s.seed, int(ids[c].id[:15], 16)])
            r = int(members[rng.integers(len(members))])
            ref, why_ref = load_source(ids[r], self.cfg)
            if content is None or ref is None:
                dropped[why or why_ref] += 1
                continue
            style, target, match = self._match(content, centre)
            if match < st.min_match:
                dropped["no_style_match"] += 1
                continue
            sid = digest([ids[c].id, ids[r].id, settings], 20)
            ref_sim = float(x[c] @ x[r])
            gens = [[self.extractor.name, self.extractor.version], list(UNION_FIND), list(STYLIZER),
                    list(CHAIN_TEMPLATER)]
            rows.append({"sample_id": sid, "kind": "style", "source_ids": json.dumps([ids[c].id, ids[r].id]),
                         "inputs": [png(content), png(ref)], "roles": ["edit", "reference"], "edit_mask": None,
                         "target_png": png(target),
                         "instructions": json.dumps({t: style_instruction(t, sid, s.seed, STYLES[style][1])
                                                     for t in self.tasks()}),
                         "generators": json.dumps(gens),
                         "scores": json.dumps({"style_match": match, "content_reference_style_cos": ref_sim,
                                               "style_set_size": float(len(members))}),
                         "labels": json.dumps({"style": style})})
        counts = {"images": len(recs), "read": len(ids), "skipped": count_reasons(skipped),
                  "style_sets": len(sets), "style_sets_tried": tried, "style_set": int(len(members)),
                  "contents": int(len(others)), "pairs": len(rows),
                  "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_chain_records(part, rows, counts)
        return UnitReport(stage=self.label, unit=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")
        check_sum(self.label, c["read"], c["style_set"] + c["contents"], "images in and outside the style set")
        check_sum(self.label, c["contents"], c["pairs"] + sum(c["dropped"].values()), "content images")
