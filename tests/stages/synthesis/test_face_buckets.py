"""Face pairs in buckets on planted descriptors: several units, counts reconciled, no pair twice, and new faces
re-run only the bucket they join."""

import hashlib
import json

import numpy as np
import pyarrow as pa

from mining.faces.pairs import face_pairs
from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from schemas.layout import RunLayout, SynthFiles
from stages.synthesis.face_buckets import FaceBucketsStage
from stages.synthesis.faces import FACE_SCHEMA, FacePairsStage, FacesStage
from stages.synthesis.parts import iter_records, png
from store import storage
from tests.mining.faces.test_buckets import planted

PNG = png(np.zeros((8, 8, 3), np.uint8))


def _write_faces(cfg: RunConfig, parts: list[tuple[list[str], np.ndarray]]) -> None:
    """Faces parts holding the given (ids, descriptors) and the faces stage's marker."""
    out = RunLayout(cfg.root).synth(FacesStage.kind)
    names = []
    for k, (ids, x) in enumerate(parts):
        name = f"part-{k:05d}-{hashlib.sha256(''.join(ids).encode()).hexdigest()[:8]}"
        rows = [{"source_id": i, "image_png": PNG, "height": 8, "width": 8, "box": [0, 0, 8, 8], "score": 1.0,
                 "landmarks": _landmarks(i).reshape(-1).tolist(), "descriptor": v.tolist(), "raw_norm": 1.0, "chip_png": PNG,
                 "roll_deg": 0.0, "yaw": 0.0, "sharpness": 99.0} for i, v in zip(ids, x)]
        storage.atomic_write_parquet(storage.join(out, name, SynthFiles.FACES),
                                     pa.Table.from_pylist(rows, schema=FACE_SCHEMA))
        storage.write_marker(storage.join(out, name), {"counts": {"faces": len(ids)}, "model": ["planted", "1"]})
        names.append(name)
    n = sum(len(ids) for ids, _ in parts)
    storage.write_marker(out, {"counts": {"images": n, "faces": n, "skipped": {}, "dropped": {}}, "parts": names})


def _landmarks(source_id: str) -> np.ndarray:
    """Landmarks that differ from photo to photo: no two planted faces share a framing (none aligned)."""
    return np.random.default_rng(int(source_id[:8], 16)).uniform(0, 8, (5, 2)).astype(np.float32)


def _ids(tag: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{tag}{i}".encode()).hexdigest() for i in range(n)]


def _cfg(tmp_path) -> RunConfig:
    return RunConfig(root=str(tmp_path / "root"), synthesis={
        "tasks": ["facial_editing_misaligned"],
        "faces": {"bucket_faces": 40, "erased_reference": False, "max_pairs_per_set": 1000}})


def _run(cfg):
    ex = LocalExecutor()
    b = ex.run(FaceBucketsStage(cfg))
    return b, ex.run(FacePairsStage(cfg))


def test_bucketed_face_pairs_reconcile_find_each_pair_once_and_match_the_all_pairs_search(tmp_path):
    cfg = _cfg(tmp_path)
    x, ids = planted(24, 5, seed=3), _ids("a", 120)
    _write_faces(cfg, [(ids[:40], x[:40]), (ids[40:80], x[40:80]), (ids[80:], x[80:])])
    buckets, pairs = _run(cfg)
    assert buckets.counts["buckets"] == 3 and pairs.items == 3  # ceil(120 / 40) buckets, one unit each
    assert pairs.counts["faces"] == buckets.counts["rows"] == 120
    marker = storage.read_marker(FacePairsStage(cfg).out)
    per = [storage.read_marker(storage.join(FacePairsStage(cfg).out, p))["counts"] for p in marker["parts"]]
    assert sum(c["misaligned"]["samples"] for c in per) == pairs.counts["misaligned"]["samples"] > 0
    recs = list(iter_records(FacePairsStage(cfg).out))
    assert len(recs) == len({r["sample_id"] for r in recs}) == pairs.counts["samples"]["facial_editing_misaligned"]
    f = cfg.synthesis.faces
    whole = face_pairs(x, np.stack([_landmarks(i) for i in ids]), np.full((120, 2), 8), band=tuple(f.band),
                       aligned_min=f.aligned_min, max_shift=f.aligned_max_shift, max_pairs_per_face=f.max_pairs_per_face,
                       max_pairs_per_set=f.max_pairs_per_set, seed=0, margin=cfg.supervision.face_margin)
    assert {(r["source_id"], r["target_id"]) for r in recs} == {(ids[i], ids[j]) for i, j, _ in whole.misaligned}


def test_new_faces_rerun_only_the_bucket_they_join(tmp_path):
    cfg = _cfg(tmp_path)
    x, ids = planted(24, 5, seed=3), _ids("a", 120)
    parts = [(ids[:40], x[:40]), (ids[40:80], x[40:80]), (ids[80:], x[80:])]
    _write_faces(cfg, parts)
    _, first = _run(cfg)
    out = FacePairsStage(cfg).out
    before = storage.read_marker(out)["parts"]
    rng = np.random.default_rng(9)
    more = x[:1] + 0.01 * rng.standard_normal((4, 128))  # four more photos of the first person
    _write_faces(cfg, parts + [(_ids("b", 4), (more / np.linalg.norm(more, axis=1, keepdims=True)).astype(np.float32))])
    buckets, second = _run(cfg)
    after = storage.read_marker(out)["parts"]
    bm = storage.read_marker(FaceBucketsStage(cfg).out)
    joined = storage.read_marker(storage.join(FaceBucketsStage(cfg).out, bm["parts"][-1]))["buckets"]
    assert buckets.execution.ran == 1 and 1 <= len(joined) < 3  # the new faces part; it joins 1-2 of 3 buckets
    assert second.execution.ran == len(joined)  # the buckets the new faces joined, and only them
    assert len(set(after) - set(before)) == len(set(before) - set(after)) == len(joined)
    assert second.counts["faces"] == 124 and second.counts["misaligned"]["samples"] >= \
        first.counts["misaligned"]["samples"]
    q = storage.read_parquet(SynthFiles(FaceBucketsStage(cfg).out).quantiser)
    assert q.num_rows == 1 + 3  # the mean and 3 centroids, kept: 124 faces ask for 4 buckets, within 2x of 3
    assert json.dumps(storage.read_marker(out)["counts"])  # the merged marker reconciled (finalize raised else)
