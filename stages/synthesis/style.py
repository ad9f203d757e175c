"""Style pairs (ACE B.4.2): <root>/synth/style/part-BBBBB-<digest>/, one per style bucket.

Style sets are found across the corpus: style features per catalog slice (stages/synthesis/style_features.py,
every image read: `synthesis.fraction` does not apply, a family is found only when seen whole), every image
in a style bucket (a K-means quantiser over the style features, `style.bucket_images` a bucket), and an item
per bucket: its members' features (only the vectors and records are held: memory the bucket's (n, n)
cosines), tight sets among them (mining/style/sets.py: every member within `style.threshold` of its set's
centre and `style.pair_min` of every other member; band union-find chained unrelated images into one mixed
set). A style family whose images sit in different catalog slices is in one bucket and found as one set.
ACE keeps the largest set and renders content in its style with a generative model; no such model runs
offline, and a corpus' best sets are often plain photographs or grey faces, which no bank operation makes.
The bank rendering nearest a set's centre is no evidence the set is in that style (a set of photos sits at
cosine ~0.87 from pencil renderings of photos), so a set is used only when its members are already in a bank
style: re-rendering `style.probe_members` of them (seeded) in it changes at least `style.min_in_style_share`
of them little (mining/style/fixed.py, thresholds `supervision.style_fixed_*`). Sets are tried best first (up
to `style.max_sets_tried`), up to `style.max_style_sets` used; the others count in `set_dropped`
(not_in_bank_style, unreadable). A unit's contents are the images of its content pool (catalog slice p is the
pool of unit p mod units) outside its used sets: up to `style.contents_per_item` per pool slice (seeded) are
dealt in turn to the sets and restyled by the set's bank operation (mining/style/stylize.py), kept when the
target's cosine to the set's centre reaches `style.min_match`; the style reference is a set member (seeded
among them) whose cosine to the target reaches `supervision.style_min_cosine`, exceeds the content's by
`supervision.style_min_margin`, and that is itself a fixed point of the style (else style_mismatch). A kept
content gives `style_transfer_reference` (content + reference -> target) and `style_editing` (content ->
target, the style named). Counts per unit: contents = pairs + dropped by reason; pool = pool_in_sets +
contents; style_sets_tried = style_sets_used + set_dropped; merged: members = the images read (and pool, when
no slice serves two units).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mining.instructions.chains import CHAIN_TEMPLATER, style_instruction
from mining.supervision import View
from mining.style.fixed import in_style, set_style
from mining.style.sets import centre, set_stats, tight_sets
from mining.style.stylize import STYLES, STYLIZER, stylize
from stages.synthesis.chain_records import CHAINS, chain_line, chain_samples, write_chain_records
from runtime.stage import ItemReport, StageReport
from schemas.records import ImageRecord
from stages.synthesis.buckets import bucket_rows
from stages.synthesis.parts import PartStage, check_sum, count_reasons, digest, load_source, png
from stages.synthesis.style_features import StyleBucketsStage, StyleFeaturesStage, slice_features, style_extractor
from store import storage

STYLE_TASKS = ("style_editing", "style_transfer_reference")
STYLE_SETS = ("style-tight-sets", "2")


class StyleStage(PartStage):
    name = "synth-style"
    kind = "style"
    produces, needs, shard_set = STYLE_TASKS, ("synth-style-buckets",), "chains"
    key, config_section, ui_report = "style", "synthesis.style", "chains"
    samples = staticmethod(chain_samples)
    summary = classmethod(chain_line)

    @staticmethod
    def expected(counts: dict, task: str) -> int:
        return counts["pairs"]
    table = CHAINS
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        self.extractor = style_extractor(cfg)  # config only

    def inputs(self) -> list[str]:
        return [self.layout.synth(StyleBucketsStage.kind), self.layout.synth(StyleFeaturesStage.kind)]

    def tasks(self) -> list[str]:
        return [t for t in self.cfg.synthesis.tasks if t in STYLE_TASKS]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        style = s.style.model_dump()
        style["contents_per_unit"] = style.pop("contents_per_item")  # the key the stage's version was made with
        return {"tasks": self.tasks(), "style": style, "seed": s.seed, "max_side": s.max_side,
                "max_images": s.max_images, "extractor": [self.extractor.name, self.extractor.version]}

    def sample_settings(self) -> dict:
        """The settings a sample id digests: not the bucketing (it decides which sets are found, not a pair)."""
        s = self.settings()
        return {**s, "style": {k: v for k, v in s["style"].items() if k not in ("bucket_images", "fit_sample")}}

    def worker_model(self):
        return self.extractor

    def setup(self) -> None:
        self.extractor.setup()

    def _buckets_marker(self) -> dict:
        if getattr(self, "_bm", None) is None:
            d = self.inputs()[0]
            self._bm = storage.read_marker(d)
            if self._bm is None:
                raise FileNotFoundError(f"no complete style buckets under {d}")
        return self._bm

    def pools(self, k: int) -> list[str]:
        """The style-features parts whose images are unit k's contents: every catalog slice serves one unit
        (slice p serves unit p mod units); a unit no slice falls to takes slice k mod slices."""
        names = self._buckets_marker()["source_parts"]
        n = len(self._buckets_marker()["buckets"])
        return [q for p, q in enumerate(names) if p % n == k] or [names[k % len(names)]]

    def item_key(self, k: int) -> list:
        return [self._buckets_marker()["buckets"][k]["digest"], self.pools(k)]

    def parts(self) -> list[str]:
        if getattr(self, "_part_cache", None) is None:
            base = self.settings()
            self._part_cache = [storage.join(self.out, f"part-{b['bucket']:05d}-{digest([base, self.item_key(k)])}")
                                for k, b in enumerate(self._buckets_marker()["buckets"])]
        return self._part_cache

    def plan(self) -> int:
        return len(self.parts())

    def _match(self, content: np.ndarray, centre: np.ndarray, names=None) -> tuple[str, np.ndarray, float, np.ndarray]:
        """The bank stylisation of `content` (among `names`, default all) nearest in style to `centre` (a unit
        vector): (name, image, cosine, its feature)."""
        outs = {name: stylize(name, content) for name in (names or STYLES)}
        feats = self.extractor(list(outs.values()))
        sims = feats @ centre
        best = int(np.argmax(sims))
        name = list(outs)[best]
        return name, outs[name], float(sims[best]), feats[best]

    def _styled_sets(self, sets: list[np.ndarray], x: np.ndarray, recs: list, k: int):
        """[(members, centre, bank style)] of the sets (best first, at most `style.max_sets_tried`) whose probed
        members are in a bank style, at most `style.max_style_sets`; the number tried and the others' fates."""
        st, sup = self.cfg.synthesis.style, self.cfg.supervision
        used, tried, fate = [], 0, Counter()
        for members in sets[: st.max_sets_tried]:
            if len(used) >= st.max_style_sets:
                break
            tried += 1
            rng = np.random.default_rng([self.cfg.synthesis.seed, k, int(members[0])])
            probe = [load_source(recs[int(i)], self.cfg)[0] for i in rng.permutation(members)[: st.probe_members]]
            probe = [im for im in probe if im is not None]
            if len(probe) < min(len(members), st.probe_members):
                fate["unreadable"] += 1
                continue
            style, _ = set_style(probe, self.extractor, sup.style_fixed_max_change, sup.style_fixed_min_cosine,
                                 st.min_in_style_share)
            if style is None:
                fate["not_in_bank_style"] += 1
                continue
            used.append((members, centre(x[members]), style))
        return used, tried, fate

    def _reference(self, cands: np.ndarray, style: str, recs: list, key: int):
        """The first of `cands` (seeded order) that is a fixed point of `style`: (index, image, worst scores),
        or None. Verdicts are cached per item."""
        sup = self.cfg.supervision
        for r in np.random.default_rng([self.cfg.synthesis.seed, key]).permutation(cands).tolist():
            img, _ = load_source(recs[r], self.cfg)
            if img is None:
                continue
            if (r, style) not in self._fixed:
                self._fixed[(r, style)] = in_style([img], style, self.extractor, sup.style_fixed_max_change,
                                                   sup.style_fixed_min_cosine)
            ok, worst = self._fixed[(r, style)]
            if ok.all():
                return r, img, worst
        return None

    def run(self, k: int) -> ItemReport:
        part = self.parts()[k]
        s, st = self.cfg.synthesis, self.cfg.synthesis.style
        sup = self.cfg.supervision
        t = bucket_rows(self.inputs()[0], self._buckets_marker(), k)
        ids = [ImageRecord.model_validate(json.loads(r)) for r in t.column("record").to_pylist()]
        x = np.asarray(t.column("feature").to_pylist(), np.float32).reshape(t.num_rows, -1) if t.num_rows else \
            np.zeros((0, 1), np.float32)
        pool, xs = [], []  # the contents' catalog slices: records and features
        for name in self.pools(k):
            recs, xp = slice_features(self.cfg, name)
            pool += recs
            xs.append(xp)
        xp = np.concatenate(xs) if pool else np.zeros((0, x.shape[1]), np.float32)
        sets = tight_sets(x, st.threshold, st.pair_min, st.min_set, st.max_sets_tried)
        bucket = self._buckets_marker()["buckets"][k]["bucket"]  # the seeds: a unit's output is its bucket's
        used, tried, set_fate = self._styled_sets(sets, x, ids, bucket)
        self._fixed: dict = {}
        in_sets = np.concatenate([m for m, _, _ in used]) if used else np.zeros(0, np.int64)
        taken = {ids[int(i)].id for i in in_sets}
        others = np.asarray([c for c, r in enumerate(pool) if r.id not in taken], np.int64)
        dropped: Counter[str] = Counter()
        rows: list[dict] = []
        if not used:
            dropped["no_renderable_style_set"] += len(others)
            chosen = np.zeros(0, np.int64)
        else:
            rng = np.random.default_rng([s.seed, bucket, len(x)])
            chosen = rng.permutation(others)[: st.contents_per_item * len(self.pools(k))]
            dropped["over_unit_cap"] += len(others) - len(chosen)
        settings = self.sample_settings()
        gens = [[self.extractor.name, self.extractor.version], list(STYLE_SETS), list(STYLIZER), list(CHAIN_TEMPLATER)]
        for turn, c in enumerate(chosen.tolist()):
            members, cen, style = used[turn % len(used)]
            content, why = load_source(pool[c], self.cfg)
            if content is None:
                dropped[why] += 1
                continue
            _, target, match, ft = self._match(content, cen, [style])
            if match < st.min_match:
                dropped["no_style_match"] += 1
                continue
            to_target = x[members] @ ft
            near = (to_target >= sup.style_min_cosine) & (to_target - xp[c] @ ft >= sup.style_min_margin)
            picked = self._reference(members[near], style, ids, int(pool[c].id[:15], 16)) if near.any() else None
            if picked is None:
                dropped["style_mismatch"] += 1
                continue
            r, ref, fixed = picked
            from mining.style.features import check_extractor, style_reference_ok  # torch: in the item, not the flow

            if self.extractor.name != check_extractor().name or s.seed != 0:  # the gate's features differ: ask it
                view = View(task="style_transfer_reference", instruction="", inputs=[content, ref], masks=[None, None],
                            target=target, labels={"style": style})
                if style_reference_ok(view, sup)[0] is not None:
                    dropped["style_mismatch"] += 1
                    continue
            sid = digest([pool[c].id, ids[r].id, settings], 20)
            tight = set_stats(x, members)
            rows.append({"sample_id": sid, "kind": "style", "source_ids": json.dumps([pool[c].id, ids[r].id]),
                         "inputs": [png(content), png(ref)], "roles": ["edit", "reference"], "edit_mask": None,
                         "target_png": png(target),
                         "instructions": json.dumps({t: style_instruction(t, sid, s.seed, STYLES[style][1])
                                                     for t in self.tasks()}),
                         "generators": json.dumps(gens),
                         "scores": json.dumps({"style_match": match, "reference_target_style_cos": float(x[r] @ ft),
                                               "content_reference_style_cos": float(xp[c] @ x[r]),
                                               "content_target_style_cos": float(xp[c] @ ft),
                                               "reference_fixed_change": fixed["fixed_change"],
                                               "reference_fixed_cos": fixed["fixed_cos"],
                                               "style_set_size": float(len(members)),
                                               "style_set_least_to_centre": tight["least_to_centre"],
                                               "style_set_least_pair": tight["least_pair"]}),
                         "labels": json.dumps({"style": style})})
        counts = {"members": len(x), "style_sets": len(sets), "style_sets_tried": tried,
                  "style_sets_used": len(used), "set_dropped": count_reasons(set_fate), "style_set": int(len(in_sets)),
                  "pool": len(pool), "pool_in_sets": len(pool) - len(others), "contents": int(len(others)),
                  "pairs": len(rows), "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_chain_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["style_sets_tried"], c["style_sets_used"] + sum(c["set_dropped"].values()),
                  "style sets tried")
        check_sum(self.label, c["pool"], c["pool_in_sets"] + c["contents"], "content pool in and outside the sets")
        check_sum(self.label, c["contents"], c["pairs"] + sum(c["dropped"].values()), "content images")
        if c["style_set"] > c["members"]:
            raise RuntimeError(f"{self.label}: {c['style_set']} images in style sets of {c['members']} members")

    def finalize(self, n: int) -> StageReport:
        """The merged counts, reconciled; every image read is a member of one bucket and in one content pool."""
        if n == 0:
            counts = {"members": 0, "style_sets": 0, "style_sets_tried": 0, "style_sets_used": 0, "set_dropped": {},
                      "style_set": 0, "pool": 0, "pool_in_sets": 0, "contents": 0, "pairs": 0, "dropped": {}}
            storage.write_marker(self.out, {"counts": counts, "parts": [], "units": 0})
            self.stamp(self.out)
            return self.report()  # type: ignore[return-value]
        rep = super().finalize(n)
        read = storage.read_marker(self.inputs()[1])["counts"]["read"]
        check_sum(self.label, read, rep.counts["members"], "images read in style buckets")
        if n <= len(self._buckets_marker()["source_parts"]):  # else a slice is the pool of more than one unit
            check_sum(self.label, read, rep.counts["pool"], "images read in content pools")
        return rep
