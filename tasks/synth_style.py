"""Style pairs (ACE B.4.2): <root>/synth/style/.

Units are catalog slices of `synthesis.style.partition_size` images, not K-means clusters: the clusters group
images by content (SigLIP), and one style cuts across contents, so a cluster would split a style family; every
image is read (`synthesis.fraction` does not apply: a family is found only when seen whole). Per unit: style
features of every image (only the vectors are held), then tight sets (mining/style_sets.py: every member
within `style.threshold` of its set's centre and `style.pair_min` of every other member; band union-find
chained unrelated images into one mixed set). ACE keeps the largest set and renders content in its style with
a generative model; no such model runs offline, and a corpus' best sets are often plain photographs or grey
faces, which no bank operation makes, so sets are tried best first (up to `style.max_sets_tried`) and each
whose style the bank renders (a probe image's best stylisation reaches `style.min_match` to the set's centre)
is used, up to `style.max_style_sets`. Up to `style.contents_per_unit` images outside the used sets (seeded)
are dealt in turn to them and restyled by the set's bank operation (mining/stylize.py), kept when the target's
cosine to the set's centre reaches `style.min_match`; the style reference is a set member whose cosine to the
target reaches `supervision.style_min_cosine` (seeded among them). A kept content gives
`style_transfer_reference` (content + reference -> target) and `style_editing` (content -> target, the style
named). Counts: contents = pairs + dropped by reason; images = read + skipped by reason; read = set + contents.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mining.chain_instructions import CHAIN_TEMPLATER, style_instruction
from mining.style import make_style_extractor
from mining.style_sets import centre, set_stats, tight_sets
from mining.stylize import STYLES, STYLIZER, stylize
from tasks import storage
from tasks.chain_records import CHAINS, write_chain_records
from tasks.stage import Resources, UnitReport
from tasks.synth_parts import PartStage, check_sum, count_reasons, digest, load_source, png

STYLE_TASKS = ("style_editing", "style_transfer_reference")
STYLE_SETS = ("style-tight-sets", "1")


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

    def _match(self, content: np.ndarray, centre: np.ndarray, names=None) -> tuple[str, np.ndarray, float, np.ndarray]:
        """The bank stylisation of `content` (among `names`, default all) nearest in style to `centre` (a unit
        vector): (name, image, cosine, its feature)."""
        outs = {name: stylize(name, content) for name in (names or STYLES)}
        feats = self.extractor(list(outs.values()))
        sims = feats @ centre
        best = int(np.argmax(sims))
        name = list(outs)[best]
        return name, outs[name], float(sims[best]), feats[best]

    def _renderable_sets(self, sets: list[np.ndarray], x: np.ndarray, recs: list, k: int):
        """[(members, centre, bank style)] of the sets (best first, at most `style.max_sets_tried` probed) whose
        style the bank renders: its best stylisation of a probe image outside every set reaches
        `style.min_match` to the set's centre; at most `style.max_style_sets`. And the number probed."""
        st = self.cfg.synthesis.style
        outside = np.setdiff1d(np.arange(len(x)), np.concatenate(sets)) if sets else np.arange(len(x))
        used, tried = [], 0
        for members in sets[: st.max_sets_tried]:
            if len(used) >= st.max_style_sets:
                break
            pool = outside if len(outside) else np.setdiff1d(np.arange(len(x)), members)
            if len(pool) == 0:
                continue
            tried += 1
            c = centre(x[members])
            rng = np.random.default_rng([self.cfg.synthesis.seed, k, int(members[0])])
            img, _ = load_source(recs[int(pool[rng.integers(len(pool))])], self.cfg)
            if img is None:
                continue
            name, _, match, _ = self._match(img, c)
            if match >= st.min_match:
                used.append((members, c, name))
        return used, tried

    def run(self, k: int) -> UnitReport:
        from tasks.ingest import catalog_slice

        part = self.parts()[k]
        done = storage.read_marker(part)
        if done is not None:
            return UnitReport(stage=self.label, unit=k, counts=done["counts"])
        self.setup()
        s, st = self.cfg.synthesis, self.cfg.synthesis.style
        min_ref = self.cfg.supervision.style_min_cosine
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
        sets = tight_sets(x, st.threshold, st.pair_min, st.min_set, st.max_sets_tried)
        used, tried = self._renderable_sets(sets, x, ids, k)
        in_sets = np.concatenate([m for m, _, _ in used]) if used else np.zeros(0, np.int64)
        others = np.setdiff1d(np.arange(len(x)), in_sets)
        dropped: Counter[str] = Counter()
        rows: list[dict] = []
        if not used:
            dropped["no_renderable_style_set"] += len(others)
            chosen = np.zeros(0, np.int64)
        else:
            rng = np.random.default_rng([s.seed, k, len(x)])
            chosen = rng.permutation(others)[: st.contents_per_unit]
            dropped["over_unit_cap"] += len(others) - len(chosen)
        settings = self.settings()
        gens = [[self.extractor.name, self.extractor.version], list(STYLE_SETS), list(STYLIZER), list(CHAIN_TEMPLATER)]
        for turn, c in enumerate(chosen.tolist()):
            members, cen, style = used[turn % len(used)]
            content, why = load_source(ids[c], self.cfg)
            if content is None:
                dropped[why] += 1
                continue
            _, target, match, ft = self._match(content, cen, [style])
            if match < st.min_match:
                dropped["no_style_match"] += 1
                continue
            to_target = x[members] @ ft
            ok = members[to_target >= min_ref]
            if len(ok) == 0:
                dropped["style_mismatch"] += 1
                continue
            rng = np.random.default_rng([s.seed, int(ids[c].id[:15], 16)])
            r = int(ok[rng.integers(len(ok))])
            ref, why = load_source(ids[r], self.cfg)
            if ref is None:
                dropped[why] += 1
                continue
            sid = digest([ids[c].id, ids[r].id, settings], 20)
            tight = set_stats(x, members)
            rows.append({"sample_id": sid, "kind": "style", "source_ids": json.dumps([ids[c].id, ids[r].id]),
                         "inputs": [png(content), png(ref)], "roles": ["edit", "reference"], "edit_mask": None,
                         "target_png": png(target),
                         "instructions": json.dumps({t: style_instruction(t, sid, s.seed, STYLES[style][1])
                                                     for t in self.tasks()}),
                         "generators": json.dumps(gens),
                         "scores": json.dumps({"style_match": match, "reference_target_style_cos": float(x[r] @ ft),
                                               "content_reference_style_cos": float(x[c] @ x[r]),
                                               "style_set_size": float(len(members)),
                                               "style_set_least_to_centre": tight["least_to_centre"],
                                               "style_set_least_pair": tight["least_pair"]}),
                         "labels": json.dumps({"style": style})})
        counts = {"images": len(recs), "read": len(ids), "skipped": count_reasons(skipped),
                  "style_sets": len(sets), "style_sets_tried": tried, "style_sets_used": len(used),
                  "style_set": int(len(in_sets)), "contents": int(len(others)), "pairs": len(rows),
                  "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_chain_records(part, rows, counts)
        return UnitReport(stage=self.label, unit=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")
        check_sum(self.label, c["read"], c["style_set"] + c["contents"], "images in and outside the style set")
        check_sum(self.label, c["contents"], c["pairs"] + sum(c["dropped"].values()), "content images")
