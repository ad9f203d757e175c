"""Condition-map and restoration samples (ACE App. B.2, B.8.1): <root>/synth/maps/.

One record per image and map kind (segmentation, depth, pose, mosaic, degradation, grayscale, canny,
contour, doodle, scribble), each giving analysis_<map> (edit = source, target = the map) and
control_<map> (edit = the map, target = the source); a `regional_share` of them put the map inside one
segment only (mask = that segment; outside it every pixel is the source's). Degradation records are
clean -> degraded; control_degradation is their reverse (restore / denoise / deblur / upscale) and
control_grayscale is colorization. `control_multi` records cut the image into 2-3 groups of segments and
give each group a different map (one input per group).

Segments come from `stages.synthesis.segment.segmenter_for(cfg)` run here on every image (all its regions, not
only the object-like masks the object stage keeps): the segmentation map then covers the image, and this
stage needs no other synthesis stage. Depth needs a model folder (else dropped: depth_model_absent),
pose the MediaPipe estimator of mining/models/mediapipe.py (else pose_model_absent; images without a person:
no_person). Counts reconcile per map kind: images read = samples + dropped by reason.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Callable, Iterator

import numpy as np

from mining.maps import cond_maps as cm
from mining.image.degrade import DEGRADER, DegradeRanges, degrade, op_scores, restoration_verb
from mining.maps.depth import DepthEstimator
from mining.maps.hed import HedEdges
from mining.instructions.maps import MAP_TEMPLATER, map_instruction, multi_instruction
from mining.supervision import colourfulness, map_content
from schemas.config import MAP_TASKS
from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role
from stages.synthesis.segment import segmenter_for
from runtime.stage import ItemReport
from stages.synthesis.parts import (PartStage, check_sum, count_reasons, digest, load_source, unpng,
                               write_records)

KINDS = cm.MAP_NAMES + ("multi",)
REGION_TRIES = 6  # random regions tried for a regional sample before one placed on the map's content


def _png(a: np.ndarray) -> bytes:
    """Lossless PNG through OpenCV at compression 3: several times faster than PIL's level 6 on the maps,
    which are most of this stage's time."""
    import cv2

    ok, buf = cv2.imencode(".png", a[..., ::-1] if a.ndim == 3 else a, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write PNG")
    return buf.tobytes()


def _gen(name: str) -> Generator:
    spec = cm.MAPS[name]
    return Generator(name=spec.generator, version=spec.version)


class PoseAbsent(RuntimeError):
    pass


def pose_backend(cfg) -> tuple[Callable[[np.ndarray], list], Callable[[int, int, list], np.ndarray], Generator]:
    """(estimator, draw_openpose, generator) from mining/models/mediapipe.py; PoseAbsent when it cannot load."""
    try:
        from mining.models.mediapipe import PoseEstimator, draw_openpose
    except ImportError as e:
        raise PoseAbsent(f"mining.models.mediapipe unavailable: {e}") from None
    try:
        est = PoseEstimator(cfg.models_dir)
        est.setup()
    except (OSError, ImportError, ValueError, TypeError, RuntimeError) as e:
        raise PoseAbsent(f"pose estimator did not load: {type(e).__name__}: {e}") from None
    return est, draw_openpose, Generator(name=est.name, version=est.version)


def map_kinds(tasks: list[str]) -> list[str]:
    """The record kinds `tasks` need, in KINDS order."""
    want = {t.partition("_")[2] for t in tasks if t in MAP_TASKS and t != "control_multi"}
    return [k for k in cm.MAP_NAMES if k in want] + (["multi"] if "control_multi" in tasks else [])


class MapsStage(PartStage):
    name = "synth-maps"
    kind = "maps"
    produces, shard_set = MAP_TASKS, "synthesis"
    key, config_section, ui_report = "maps", "synthesis.maps", "maps"

    def samples(self, rec: dict, tasks: list[str]) -> Iterator[AceSample]:
        return map_record_samples(rec, tasks)

    @staticmethod
    def expected(counts: dict, task: str) -> int:
        return expected_samples(counts, task)

    @classmethod
    def summary(cls, m: dict, group: dict, name: str) -> str:
        return f"synthesis: maps from {m['read']} images: {m['samples']} (dropped {m['dropped']})"
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        m = cfg.synthesis.maps
        self.segmenter = segmenter_for(cfg)  # cheap: config only
        self.depth = DepthEstimator(cfg.models_dir, m.depth_model, m.depth_sha256, m.depth_input_size)
        self.hed = HedEdges(cfg.models_dir, m.hed_sha256)  # scribble / doodle from HED when its file is present
        self._pose: Any = None

    def tasks(self) -> list[str]:
        return [t for t in self.cfg.synthesis.tasks if t in MAP_TASKS]

    def kinds(self) -> list[str]:
        return map_kinds(self.tasks())

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"tasks": self.tasks(), "maps": s.maps.model_dump(mode="json"), "seed": s.seed,
                "regions": {"colour": self.cfg.supervision.min_colourfulness,
                            "content": self.cfg.supervision.min_map_content},
                "segmenter": [self.segmenter.name, self.segmenter.version], "depth": self.depth.identity(),
                "pose": self._pose_identity(), "hed": self.hed.sha256 if self.hed.available() else None,
                "max_side": s.max_side, "max_images": s.max_images, "fraction": s.fraction,
                "partition_size": s.partition_size}

    def _pose_identity(self) -> str | None:
        """The pose model's files, present and pinned, or None (parts made without them name that)."""
        from mining.models.mediapipe import MP_FILES, mediapipe_dir

        files = ("pose_detection.tflite", "pose_landmark_full.tflite")
        if not all((mediapipe_dir(self.cfg.models_dir) / f).is_file() for f in files):
            return None
        return "+".join(MP_FILES[f][1][:12] for f in files)

    def worker_model(self):
        return self.depth if self.depth.available() and "depth" in self._used() else self.segmenter

    def _used(self) -> set[str]:
        used = set(self.kinds()) - {"multi"}
        return used | (set(self.cfg.synthesis.maps.multi_from) if "multi" in self.kinds() else set())

    def setup(self) -> None:
        self.segmenter.setup()
        used = self._used()
        if "depth" in used and self.depth.available():
            self.depth.setup()
        if used & {"scribble", "doodle"} and self.hed.available():
            self.hed.setup()  # present but unpinned or altered: a clear error, never the fallback in silence
        if "pose" in used:
            try:
                self._pose = pose_backend(self.cfg)
            except PoseAbsent as e:
                logging.getLogger(__name__).warning("pose samples dropped (pose_model_absent): %s", e)
                self._pose = None

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    # one map of one image: (map, '', generators, scores) or (None, reason, [], {})
    def _make(self, name: str, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        m = self.cfg.synthesis.maps
        if name == "canny":
            return cm.canny(img, low=m.canny[0], high=m.canny[1]), "", [_gen(name)], {}
        if name == "mosaic":
            return cm.mosaic(img, rng, m.mosaic_block), "", [_gen(name)], {}
        if name in ("scribble", "doodle") and self.hed.available():
            edges = self.hed(img)
            out = cm.scribble(img, rng, edges=edges) if name == "scribble" else cm.hed_doodle(edges, rng)
            return out, "", [Generator(name=f"{name}-hed", version="1"),
                             Generator(name=self.hed.name, version=self.hed.version)], {}
        if name in cm.CLASSICAL_FNS:
            return cm.classical_map(name, img, rng), "", [_gen(name)], {}
        if name == "segmentation":
            if not labels.any():
                return None, "no_regions", [], {}
            return cm.colour_labels(labels), "", [_gen(name), self._seg_gen()], {"regions": float(len(np.unique(labels)) - 1)}
        if name == "depth":
            if not self.depth.available():
                return None, "depth_model_absent", [], {}
            return self.depth(img), "", [Generator(name=self.depth.name, version=self.depth.version)], {}
        if name == "pose":
            if self._pose is None:
                return None, "pose_model_absent", [], {}
            est, draw, gen = self._pose
            people = est(img)
            if not people:
                return None, "no_person", [], {}
            return draw(img.shape[0], img.shape[1], people), "", [gen], {"people": float(len(people))}
        if name == "degradation":
            d = m.degradation
            ranges = DegradeRanges(ops=tuple(d.ops), noise_sigma=d.noise_sigma, poisson_scale=d.poisson_scale,
                                   blur_sigma=d.blur_sigma, jpeg_quality=d.jpeg_quality, down_factor=d.down_factor,
                                   p_op=d.p_op)
            out, ops = degrade(img, rng, ranges)
            return out, "", [Generator(name=DEGRADER[0], version=DEGRADER[1])], {"ops": ops}
        raise ValueError(f"unknown map {name!r}")

    def _labels(self, img: np.ndarray) -> np.ndarray:
        """The segment label map at the image's size; a segmenter that proposes at a working size (the
        offline proposer) is labelled there and scaled up (nearest), not mask by mask."""
        import cv2

        h, w = img.shape[:2]
        small = getattr(self.segmenter, "proposals", None)
        if small is None:
            return cm.label_map([r.mask for r in self.segmenter(img)], h, w)
        regs = small(img)
        if not regs:
            return np.zeros((h, w), np.int32)
        sh, sw = regs[0].mask.shape
        lab = cm.label_map([r.mask for r in regs], sh, sw)
        return lab if (sh, sw) == (h, w) else cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)

    def _seg_gen(self) -> Generator:
        return Generator(name=self.segmenter.name, version=self.segmenter.version)

    def run(self, k: int) -> ItemReport:
        part = self.parts()[k]
        s = self.cfg.synthesis
        recs = self.catalog_records(k)
        kinds, tasks, settings = self.kinds(), self.tasks(), self.settings()
        skipped: Counter[str] = Counter()
        samples: Counter[str] = Counter()
        regional_n: Counter[str] = Counter()
        dropped: dict[str, Counter[str]] = {kd: Counter() for kd in kinds}
        rows: list[dict] = []
        for rec in recs:
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
                continue
            h, w = img.shape[:2]
            labels = self._labels(img)
            seed_id = int(rec.id[:15], 16)
            cache: dict[str, tuple] = {}

            def get(name: str):
                if name not in cache:
                    cache[name] = self._make(name, img, labels, np.random.default_rng([s.seed, seed_id, 100 + KINDS.index(name)]))
                return cache[name]

            source_png = _png(img)
            for kind in kinds:
                rng = np.random.default_rng([s.seed, seed_id, KINDS.index(kind)])
                sid = digest([rec.id, kind, settings], 20)
                if kind == "multi":
                    row, why = self._multi(rec.id, sid, img, labels, rng, get, source_png)
                else:
                    row, why = self._single(rec.id, sid, kind, img, labels, rng, get(kind), source_png, tasks)
                if row is None:
                    dropped[kind][why] += 1
                    continue
                rows.append(row)
                samples[kind] += 1
                regional_n[kind] += int(json.loads(row["scores"]).get("regional", 0.0) > 0)
        read = len(recs) - sum(skipped.values())
        counts = {"images": len(recs), "read": read, "skipped": count_reasons(skipped),
                  "kinds": {kd: read for kd in kinds}, "samples": count_reasons(samples),
                  "regional": count_reasons(regional_n),
                  "dropped": {kd: count_reasons(c) for kd, c in dropped.items() if c}}
        self.reconcile(counts)
        write_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def _single(self, image_id, sid, kind, img, labels, rng, made, source_png, tasks):
        cond, why, gens, scores = made
        if cond is None:
            return None, why
        if cond.shape != img.shape:
            raise RuntimeError(f"{self.label}: the {kind} map is {cond.shape}, its source {img.shape}")
        m = self.cfg.synthesis.maps
        scores = dict(scores)
        ops = scores.pop("ops", None)
        mask = None
        if rng.random() < m.regional_share:
            mask = self._region(kind, img, cond, labels, rng)
        if mask is not None:
            target = cm.regional(img, cond, mask)
            gens = gens + [self._seg_gen()]
        else:
            target, mask = cond, np.ones(img.shape[:2], bool)
        scores.update({"regional": float(not mask.all()), "mask_frac": float(mask.mean())})
        if ops is not None:
            scores.update(op_scores(ops))
        verb = restoration_verb(ops) if ops else None
        instructions = {t: map_instruction(t, sid, self.cfg.synthesis.seed, regional=not mask.all(),
                                           ops=[o["op"] for o in ops or []], verb=verb)
                        for t in tasks if t.partition("_")[2] == kind}
        if verb:
            scores[f"verb_{verb}"] = 1.0
        gens = gens + [Generator(name=MAP_TEMPLATER[0], version=MAP_TEMPLATER[1])]
        return {"sample_id": sid, "kind": f"map:{kind}", "source_id": image_id, "edit_png": source_png,
                "target_png": _png(target), "mask_png": _png((mask * 255).astype(np.uint8)), "object_png": None,
                "instructions": json.dumps(instructions), "generators": json.dumps([[g.name, g.version] for g in gens]),
                "scores": json.dumps(scores)}, ""

    def _region(self, kind: str, img: np.ndarray, cond: np.ndarray, labels: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        """A mask for a regional sample inside which the sample teaches something (the supervision gate's own
        measures: map content, colour for grayscale): up to REGION_TRIES random regions (boxes for segmentation),
        then one around a random pixel of the map's content; None (a global sample instead) when none has any."""
        area = self.cfg.synthesis.maps.regional_area
        sup = self.cfg.supervision
        floor = sup.min_map_content.get(kind, sup.min_map_content.get("default", 0.0))

        def teaches(mask: np.ndarray) -> bool:
            if kind == "degradation":
                return True
            if kind == "grayscale":
                return colourfulness(img, mask) >= sup.min_colourfulness
            return map_content(cond, mask) >= floor

        for _ in range(REGION_TRIES):
            mask = cm.random_region(labels, rng, area, box=kind == "segmentation")
            if mask is None or teaches(mask):
                return mask
        if kind in ("degradation", "grayscale"):
            return None
        flat = cond.reshape(-1, cond.shape[-1])
        mode = np.bincount((flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2]).argmax()
        ys, xs = np.nonzero(((cond[..., 0].astype(np.int64) << 16) | (cond[..., 1].astype(np.int64) << 8)
                             | cond[..., 2]) != mode)
        if not len(ys):
            return None
        i = int(rng.integers(len(ys)))
        mask = cm.random_region(labels, rng, area, around=(int(ys[i]), int(xs[i])))
        return mask if mask is not None and teaches(mask) else None

    def _multi(self, image_id, sid, img, labels, rng, get, source_png):
        m = self.cfg.synthesis.maps
        n = int(rng.integers(m.multi_maps[0], m.multi_maps[1] + 1))
        groups = cm.segment_groups(labels, n)
        if groups is None:
            return None, "too_few_segments"
        names, maps, gens = [], [], []
        for name in [m.multi_from[i] for i in rng.permutation(len(m.multi_from))]:
            if len(names) == n:
                break
            cond, _, g, _ = get(name)
            if cond is not None and name != "degradation":
                names.append(name)
                maps.append(cond)
                gens += [x for x in g if x not in gens]
        if len(names) < n:
            return None, "too_few_maps"
        composite = cm.multi_condition(maps, groups)
        gens += [self._seg_gen(), Generator(name=MAP_TEMPLATER[0], version=MAP_TEMPLATER[1])]
        return {"sample_id": sid, "kind": "multi:" + "+".join(names), "source_id": image_id,
                "edit_png": _png(composite), "target_png": source_png, "mask_png": _png((groups + 1).astype(np.uint8)),
                "object_png": None, "instructions": json.dumps({"control_multi": multi_instruction(names, sid, self.cfg.synthesis.seed)}),
                "generators": json.dumps([[g.name, g.version] for g in gens]),
                "scores": json.dumps({"maps": float(n), **{f"map_{x}": 1.0 for x in names}})}, ""

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")
        for kd, n in c["kinds"].items():
            check_sum(self.label, n, c["samples"].get(kd, 0) + sum(c["dropped"].get(kd, {}).values()),
                      f"{kd} samples")


def expected_samples(counts: dict, task: str) -> int:
    """Samples a finished maps stage promises for `task`."""
    kind = "multi" if task == "control_multi" else task.partition("_")[2]
    return counts["samples"].get(kind, 0)


def map_record_samples(rec: dict, tasks: list[str]) -> Iterator[AceSample]:
    """analysis_<map>: source -> map (or the map inside the mask); control_<map>: the reverse; control_multi:
    one input per segment group (that group's map, mid-gray elsewhere) -> the source, every mask all-white
    (the whole target is generated; the record's mask keeps the exact groups)."""
    instructions = json.loads(rec["instructions"])
    lineage = Lineage(source_ids=[rec["source_id"]],
                      generators=[Generator(name=n, version=v) for n, v in json.loads(rec["generators"])],
                      scores=json.loads(rec["scores"]))
    for task in tasks:
        if task not in instructions:
            continue
        if task == "control_multi":
            composite, groups = unpng(rec["edit_png"]), unpng(rec["mask_png"])
            units = []
            for i, g in enumerate(sorted(v for v in np.unique(groups).tolist() if v)):
                sel = groups == g
                units.append(ConditionUnit(role=Role.EDIT if i == 0 else Role.REFERENCE,
                                           image=_png(np.where(sel[..., None], composite, 128).astype(np.uint8)),
                                           mask=_png(np.full(sel.shape, 255, np.uint8))))
            target = rec["target_png"]
        elif task.startswith("analysis_"):
            units, target = [ConditionUnit(role=Role.EDIT, image=rec["edit_png"], mask=rec["mask_png"])], rec["target_png"]
        else:
            units, target = [ConditionUnit(role=Role.EDIT, image=rec["target_png"], mask=rec["mask_png"])], rec["edit_png"]
        yield AceSample(key=f"{task}-{rec['sample_id']}", task=task, instruction=instructions[task], units=units,
                        target=ConditionUnit(role=Role.TARGET, image=target), lineage=lineage)
