"""Facial editing (ACE B.4.1) and face-erased references (B.8.2) with dlib: faces, their buckets, the pairs.

    <root>/synth/faces/part-NNNNN-<digest>/faces.parquet        one face per kept image (an item = catalog slice)
    <root>/synth/face_buckets/...                               every face in one bucket (face_buckets.py)
    <root>/synth/face_pairs/part-BBBBB-<digest>/records.parquet  the pair samples of bucket BBBBB (an item)

`FacesStage` keeps images holding exactly one usable face (drops by reason: no_face, many_faces,
too_small, pose, blurry, and decode reasons) and stores its box, 5 landmarks, unit descriptor and aligned
chip. `FacePairsStage` pairs the faces of one bucket (mining/faces/pairs.py, candidates from
mining/faces/buckets.py: exact up to `faces.exact_max` faces, faiss IVF above) and writes one record per
sample: facial_editing (aligned), facial_editing_misaligned (band), and per pair a face-erased reference
(task reference_generation: the target with its face region blanked and masked + the other photo's aligned
face as the reference). A part is named by its bucket's content digest: new faces re-run only the buckets
they join. A face near a bucket boundary is in more than one bucket; a pair both hold is kept by one unit
only (the lowest bucket holding both: other_bucket in the others' counts), and a pair whose faces share no
bucket is not found. Memory of a pair unit: its bucket's descriptors and landmarks (528 bytes a face) and
two faces parts' images. Counts reconcile per unit and merged; the units' home faces add up to the faces
stage's.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.faces.dlib_faces import DROP_REASONS, DlibFaces, Face, FaceFilter, face_region_mask
from mining.faces.buckets import BucketSearch, owner
from mining.faces.change import UNNAMED, change_instruction, change_kind
from mining.faces.pairs import CHANGE_NAMER, ERASER, PAIRER, face_instruction, face_pairs
from schemas.config import FACE_TASKS
from schemas.layout import SynthFiles
from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role
from store import storage
from runtime.stage import ItemReport, Resources, StageReport
from stages.synthesis.buckets import bucket_rows
from stages.synthesis.face_buckets import FaceBucketsStage
from stages.synthesis.parts import (RECORD_GROUP_ROWS, RECORDS, PartStage, check_sum, count_reasons, digest,
                                    load_source, png, selected, unpng)

FACES = SynthFiles.FACES
FACE_SCHEMA = pa.schema([
    ("source_id", pa.string()), ("image_png", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
    ("box", pa.list_(pa.int32(), 4)), ("score", pa.float32()), ("landmarks", pa.list_(pa.float32(), 10)),
    ("descriptor", pa.list_(pa.float32(), 128)), ("raw_norm", pa.float32()), ("chip_png", pa.binary()),
    ("roll_deg", pa.float32()), ("yaw", pa.float32()), ("sharpness", pa.float32()),
])
PAIR_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("kind", pa.string()), ("source_id", pa.string()), ("target_id", pa.string()),
    ("edit_png", pa.binary()), ("target_png", pa.binary()), ("mask_png", pa.binary()),
    ("reference_png", pa.binary()), ("instructions", pa.string()), ("generators", pa.string()),
    ("scores", pa.string()),
])
PAIR_TASKS = FACE_TASKS + ("reference_generation",)
# FaceConfig keys of the bucketing and the search: not in a sample's id
BUCKET_KEYS = ("bucket_faces", "fit_sample", "bucket_spill", "bucket_max_extra", "exact_max", "ann_nprobe")


def faces_for(cfg) -> DlibFaces:
    f = cfg.synthesis.faces
    return DlibFaces(cfg.models_dir, FaceFilter(min_score=f.min_score, min_face_px=f.min_face_px,
                                                max_roll_deg=f.max_roll_deg, max_yaw=f.max_yaw,
                                                min_sharpness=f.min_sharpness))


class FacesStage(PartStage):
    name = "synth-faces"
    kind = "faces"
    key, config_section, ui_report = "faces", "synthesis.faces", "faces"
    table = FACES
    model = True
    resources = Resources(cpus=1.0)

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        self.faces = faces_for(cfg)  # cheap: config only

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        f = s.faces
        return {"model": self.faces.name, "filter": {k: getattr(f, k) for k in (
            "min_score", "min_face_px", "max_roll_deg", "max_yaw", "min_sharpness")}, "max_side": s.max_side,
            "max_images": s.max_images, "fraction": f.fraction, "partition_size": s.partition_size}

    def worker_model(self):
        return self.faces

    def setup(self) -> None:
        self.faces.setup()

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    def run(self, k: int) -> ItemReport:
        from stages.corpus.ingest import catalog_slice

        part = self.parts()[k]
        lo, hi = self._ranges()[k]
        frac = self.cfg.synthesis.faces.fraction
        recs = selected(catalog_slice(self.cfg.root, lo, hi),
                        self.cfg.model_copy(update={"synthesis": self.cfg.synthesis.model_copy(update={"fraction": frac})}))
        skipped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        rows = []
        for rec in recs:
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
                continue
            res = self.faces(img)
            if res.reason is not None:
                dropped[res.reason] += 1
                continue
            rows.append(face_row(rec.id, img, res.face))
        counts = {"images": len(recs), "skipped": count_reasons(skipped), "faces": len(rows),
                  "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        table = pa.Table.from_pylist(rows, schema=FACE_SCHEMA).replace_schema_metadata(
            {b"model": self.faces.name.encode(), b"version": self.faces.version.encode()})
        storage.atomic_write_parquet(storage.join(part, FACES), table, row_group_rows=RECORD_GROUP_ROWS)
        storage.write_marker(part, {"counts": counts, "model": [self.faces.name, self.faces.version]})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        unknown = set(c["dropped"]) - set(DROP_REASONS)
        if unknown:
            raise RuntimeError(f"{self.label}: drop reasons {sorted(unknown)} are not face filter reasons")
        check_sum(self.label, c["images"], c["faces"] + sum(c["skipped"].values()) + sum(c["dropped"].values()),
                  "images")


def face_row(source_id: str, img: np.ndarray, face: Face) -> dict:
    return {"source_id": source_id, "image_png": png(img), "height": img.shape[0], "width": img.shape[1],
            "box": list(face.box), "score": face.score, "landmarks": face.landmarks.reshape(-1).tolist(),
            "descriptor": face.descriptor.tolist(), "raw_norm": face.raw_norm, "chip_png": png(face.chip),
            "roll_deg": face.roll_deg, "yaw": face.yaw, "sharpness": face.sharpness}


class FacePairsStage(PartStage):
    """One item per face bucket (stages/synthesis/face_buckets.py): its pairs, their records, the part's marker."""

    name = "synth-face-pairs"
    kind = "face_pairs"
    resources = Resources(cpus=1.0)
    produces, needs, shard_set = PAIR_TASKS, ("synth-face-buckets",), "synthesis"
    key, config_section, ui_report = "face_pairs", "synthesis.faces", "face_pairs"

    def packed_tasks(self) -> list[str]:
        """The configured facial tasks, and the face-erased references when asked for (not a configured task)."""
        tasks = [t for t in self.cfg.synthesis.tasks if t in FACE_TASKS]
        return tasks + ["reference_generation"] if tasks and self.cfg.synthesis.faces.erased_reference else tasks

    def samples(self, rec: dict, tasks: list[str]) -> Iterator[AceSample]:
        return face_samples(rec)

    @classmethod
    def summary(cls, p: dict, group: dict, name: str) -> str:
        f = group["faces"]
        return f"synthesis: {f['faces']} faces in {f['images']} images (dropped {f['dropped']}); pairs {p['samples']}"

    @property
    def buckets_dir(self) -> str:
        return self.layout.synth(FaceBucketsStage.kind)

    def inputs(self) -> list[str]:
        return [self.buckets_dir]

    def tasks(self) -> list[str]:
        return [t for t in self.cfg.synthesis.tasks if t in FACE_TASKS]

    def settings(self) -> dict:
        f = self.cfg.synthesis.faces
        return {"tasks": self.tasks(), "seed": self.cfg.synthesis.seed,
                **f.model_dump(mode="json", exclude={"min_score", "min_face_px", "max_roll_deg", "max_yaw",
                                                     "min_sharpness"})}

    def sample_settings(self) -> dict:
        """The settings a sample id digests: not the bucketing (it decides which pairs are found, not a pair)."""
        s = self.settings()
        return {k: v for k, v in s.items() if k not in BUCKET_KEYS}

    def _buckets_marker(self) -> dict:
        if getattr(self, "_bm", None) is None:
            m = storage.read_marker(self.buckets_dir)
            if m is None:
                raise FileNotFoundError(f"no complete face buckets under {self.buckets_dir}")
            self._bm = m
        return self._bm

    def item_key(self, k: int) -> str:
        return self._buckets_marker()["buckets"][k]["digest"]

    def parts(self) -> list[str]:
        if getattr(self, "_part_cache", None) is None:
            base = self.settings()
            self._part_cache = [storage.join(self.out, f"part-{b['bucket']:05d}-{digest([base, b['digest']])}")
                                for b in self._buckets_marker()["buckets"]]
        return self._part_cache

    def plan(self) -> int:
        return len(self.parts())

    def _faces(self, k: int) -> FaceRows:
        """Bucket k's faces in faces-part order. Memory: the bucket and one buckets part."""
        t = bucket_rows(self.buckets_dir, self._buckets_marker(), k)
        faces_dir = self.layout.synth(FacesStage.kind)
        names = t.column("source_part").to_pylist()
        model = next((m for m in ((storage.read_marker(storage.join(faces_dir, n)) or {}).get("model")
                                  for n in dict.fromkeys(names)) if m), None)
        return FaceRows(where=list(zip(names, t.column("row").to_pylist())),
                        x=np.asarray(t.column("descriptor").to_pylist(), np.float32).reshape(-1, 128),
                        landmarks=np.asarray(t.column("landmarks").to_pylist(), np.float32).reshape(-1, 5, 2),
                        sizes=np.stack([t.column("height").to_numpy(), t.column("width").to_numpy()], 1),
                        ids=t.column("source_id").to_pylist(), model=model, member=t.column("buckets").to_pylist(),
                        homes=int(pc.sum(t.column("home").cast(pa.int64())).as_py() or 0))

    def run(self, k: int) -> ItemReport:
        f, s = self.cfg.synthesis.faces, self.cfg.synthesis
        fr = self._faces(k)  # unit descriptors (the buckets stage normed them)
        where, x, ids, model = fr.where, fr.x, fr.ids, fr.model
        bucket = self._buckets_marker()["buckets"][k]["bucket"]
        search = BucketSearch(min(f.aligned_min, f.band[0]), f.exact_max, f.ann_nprobe, s.seed)
        fp = face_pairs(x, fr.landmarks, fr.sizes, band=tuple(f.band), aligned_min=f.aligned_min,
                        max_shift=f.aligned_max_shift, max_pairs_per_face=f.max_pairs_per_face,
                        max_pairs_per_set=f.max_pairs_per_set, seed=s.seed, margin=self.cfg.supervision.face_margin,
                        search=search, keep=lambda i, j: owner(fr.member[i], fr.member[j]) == bucket)
        todo = [("facial_editing", i, j, {"face_cosine": c, "face_threshold": f.aligned_min, "landmark_shift": sh})
                for i, j, c, sh in fp.aligned if "facial_editing" in self.tasks()]
        todo += [("facial_editing_misaligned", i, j, {"face_cosine": c}) for i, j, c in fp.misaligned
                 if "facial_editing_misaligned" in self.tasks()]
        gens = [list(model or ["dlib-faces", "unknown"]), list(PAIRER)]
        erased, samples, kinds = Counter(), Counter(), Counter()
        unchanged = unnamed = 0
        reader = _PartReader(self.layout.synth(FacesStage.kind))
        todo.sort(key=lambda t: (where[t[1]][0], where[t[2]][0]))  # pairs of the same two parts together
        settings = self.sample_settings()
        part = self.parts()[k]
        rows: list[dict] = []
        # memory: two faces parts and a batch of records (the records stream to the parquet file)
        with storage.ParquetSink(storage.join(part, RECORDS), PAIR_SCHEMA, row_group_rows=32) as sink:
            for task, i, j, scores in todo:
                a, b = reader.row(*where[i]), reader.row(*where[j])
                sid = digest([ids[i], ids[j], task, settings], 20)
                text = face_instruction(task, sid, s.seed)
                if task == "facial_editing":  # same framing: the pair must show a change (not a re-encoded copy)
                    ia, ib = unpng(a["image_png"]), unpng(b["image_png"])
                    change = float(np.abs(ia.astype(np.int16) - ib.astype(np.int16)).mean())
                    if change < f.aligned_min_change:
                        unchanged += 1
                        continue
                    kind, measured = change_kind(ia, ib, face_region_mask(ia.shape[:2], _face(a), f.erase_grow))
                    if kind == UNNAMED:  # no instruction can say what changed: a drop, not a change kind
                        unnamed += 1
                        continue
                    kinds[kind] += 1
                    text = change_instruction(kind, sid, s.seed) or text
                    scores = {**scores, "mean_abs_change": change, **measured}
                rows.append({"sample_id": sid, "kind": task, "source_id": ids[i], "target_id": ids[j],
                             "edit_png": a["image_png"], "target_png": b["image_png"], "mask_png": None,
                             "reference_png": None,
                             "instructions": json.dumps({task: text}),
                             "generators": json.dumps(gens + [list(CHANGE_NAMER)] * (task == "facial_editing")),
                             "scores": json.dumps(scores)})
                if f.erased_reference:
                    rec, why = erased_record(a, b, ids[i], ids[j], sid, scores, gens, f.erase_grow, s.seed)
                    erased[why or "samples"] += 1
                    if rec is not None:
                        rows.append(rec)
                if len(rows) >= 32:
                    samples.update(r["kind"] for r in rows)
                    sink.write(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
                    rows = []
            samples.update(r["kind"] for r in rows)
            sink.write(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
            del rows
            aligned = fp.aligned_counts
            for why, n in (("unchanged", unchanged), ("unnamed_change", unnamed)):
                if n:
                    aligned = {**aligned, "samples": aligned["samples"] - n,
                               "dropped": {**aligned["dropped"], why: n}}
            aligned = {**aligned, "changes": dict(sorted(kinds.items()))}
            counts = {"faces": fr.homes, "members": len(x), "aligned": aligned, "misaligned": fp.misaligned_counts,
                      "samples": {t: samples.get(t, 0) for t in PAIR_TASKS},
                      "erased": {"pairs": len(todo) - unchanged - unnamed if f.erased_reference else 0,
                                 "samples": erased.pop("samples", 0),
                                 "dropped": count_reasons(erased)}}
            self.reconcile(counts)  # inside the block: a failure leaves no records file and no marker
        storage.write_marker(part, {"counts": counts})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def finalize(self, n: int) -> StageReport:
        """The merged counts, reconciled, and the faces of every unit against the buckets' faces."""
        if n == 0:  # no faces: no unit, one empty merged marker
            counts = {"faces": 0, "members": 0, "aligned": {"candidates": 0, "samples": 0, "dropped": {}, "changes": {}},
                      "misaligned": {"band_edges": 0, "above_band": 0, "sets": 0, "set_pairs": 0, "samples": 0,
                                     "dropped": {}},
                      "samples": {t: 0 for t in PAIR_TASKS}, "erased": {"pairs": 0, "samples": 0, "dropped": {}}}
            self.reconcile(counts)
            storage.write_marker(self.out, {"counts": counts, "parts": [], "units": 0})
            self.stamp(self.out)
            return self.report()  # type: ignore[return-value]
        rep = super().finalize(n)
        check_sum(self.label, self._buckets_marker()["counts"]["rows"], rep.counts["faces"], "faces in buckets")
        return rep

    def reconcile(self, c: dict) -> None:
        a, m, e = c["aligned"], c["misaligned"], c["erased"]
        check_sum(self.label, a["candidates"], a["samples"] + sum(a["dropped"].values()), "aligned candidates")
        if "facial_editing" in self.tasks():
            check_sum(self.label, a["samples"], sum(a.get("changes", {}).values()), "aligned samples by change")
        check_sum(self.label, m["set_pairs"], m["samples"] + sum(m["dropped"].values()), "band set pairs")
        check_sum(self.label, e["pairs"], e["samples"] + sum(e["dropped"].values()), "erased references")
        want = {"facial_editing": a["samples"] if "facial_editing" in self.tasks() else 0,
                "facial_editing_misaligned": m["samples"] if "facial_editing_misaligned" in self.tasks() else 0,
                "reference_generation": e["samples"]}
        if want != c["samples"]:
            raise RuntimeError(f"{self.label}: records per task {c['samples']} do not match the pairs {want}")

@dataclass
class FaceRows:
    """One bucket's faces: (faces part, row), unit descriptors, landmarks, image sizes, source ids, the faces
    model's generator, the buckets each face is in, and how many have this bucket as their home."""
    where: list[tuple[str, int]]
    x: np.ndarray
    landmarks: np.ndarray
    sizes: np.ndarray
    ids: list[str]
    model: list | None
    member: list[list[int]]
    homes: int


class _PartReader:
    """Rows of the faces parts, the two parts read last in memory (a pair's two faces may sit in two)."""

    def __init__(self, src: str):
        self.src = src
        self.cache: dict[str, list[dict]] = {}

    def row(self, name: str, r: int) -> dict:
        if name not in self.cache:
            if len(self.cache) >= 2:
                self.cache.pop(next(iter(self.cache)))
            self.cache[name] = storage.read_parquet(storage.join(self.src, name, FACES)).to_pylist()
        return self.cache[name][r]


def _face(row: dict) -> Face:
    """The box and landmarks of a faces row (what the face region needs)."""
    return Face(box=tuple(row["box"]), score=row["score"],
                landmarks=np.asarray(row["landmarks"], np.float32).reshape(5, 2), chip=np.zeros((1, 1, 3), np.uint8),
                descriptor=np.zeros(128, np.float32), raw_norm=row["raw_norm"])


def erased_record(a: dict, b: dict, id_a: str, id_b: str, sid: str, scores: dict, gens: list, grow: float,
                  seed: int, max_frac: float = 0.6) -> tuple[dict | None, str | None]:
    """The face-erased reference of pair a -> b: b with its face region blanked (and masked), a's aligned face
    as the reference, b the target. None and a reason when the face region covers too much of b."""
    img = unpng(b["image_png"])
    mask = face_region_mask(img.shape[:2], _face(b), grow)
    if mask.mean() > max_frac:
        return None, "face_region_over_0.6"
    edit = img.copy()
    edit[mask] = 0
    rid = digest([sid, "face_erased"], 20)
    return {"sample_id": rid, "kind": "reference_generation", "source_id": id_a, "target_id": id_b,
            "edit_png": png(edit), "target_png": b["image_png"], "mask_png": png((mask * 255).astype(np.uint8)),
            "reference_png": a["chip_png"],
            "instructions": json.dumps({"reference_generation": face_instruction("reference_generation", rid, seed)}),
            "generators": json.dumps(gens + [list(ERASER)]),
            "scores": json.dumps({**scores, "erased_frac": float(mask.mean()), "face_erased": 1.0})}, None


def face_samples(rec: dict) -> Iterator[AceSample]:
    """The AceSample of one face pair record."""
    task = rec["kind"]
    lineage = Lineage(source_ids=[rec["source_id"], rec["target_id"]],
                      generators=[Generator(name=n, version=v) for n, v in json.loads(rec["generators"])],
                      scores=json.loads(rec["scores"]))
    units = [ConditionUnit(role=Role.EDIT, image=rec["edit_png"], mask=rec["mask_png"])]
    if task == "reference_generation":
        units.append(ConditionUnit(role=Role.REFERENCE, image=rec["reference_png"]))
    yield AceSample(key=f"{task}-{rec['sample_id']}", task=task, instruction=json.loads(rec["instructions"])[task],
                    units=units, target=ConditionUnit(role=Role.TARGET, image=rec["target_png"]), lineage=lineage)
