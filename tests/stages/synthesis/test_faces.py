import io

import numpy as np
import pytest
from PIL import Image

from mining.supervision import View
from schemas.config import RunConfig
from stages.corpus.demo_corpus import face_photos
from runtime.executors import LocalExecutor
from stages.corpus.ingest import ingest
from store.shard_reader import read_shard_set
from stages.synthesis.face_buckets import FaceBucketsStage
from stages.synthesis.faces import FacePairsStage, FacesStage
from stages.synthesis.pack import SynthPackStage


def _arr(b):
    return np.asarray(Image.open(io.BytesIO(b)))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faces")
    made = face_photos(tmp / "src")
    Image.new("RGB", (96, 80), (40, 90, 160)).save(tmp / "src" / "sky.png")  # no face
    base = np.asarray(Image.open(tmp / "src" / "faces" / "astronaut" / "base.png").convert("RGB")).copy()
    base[0, :4] ^= 1  # a copy that differs in four pixels: the same framing and no edit
    Image.fromarray(base).save(tmp / "src" / "faces" / "astronaut" / "copy.png")
    made = {**made, "faces/astronaut/copy.png": {"person": "astronaut", "edit": "copy"}}
    cfg = RunConfig(root=str(tmp / "root"), models_dir=str(tmp / "models"),
                    synthesis={"tasks": ["facial_editing", "facial_editing_misaligned"], "partition_size": 5,
                               "max_side": 160})
    ingest(str(tmp / "src"), cfg.root, cfg.ingest)
    ex = LocalExecutor()
    reps = [ex.run(s) for s in (FacesStage(cfg), FaceBucketsStage(cfg), FacePairsStage(cfg),
                                SynthPackStage(cfg, shard_name="faces"))]
    return cfg, made, [reps[0], reps[2], reps[3]]


def test_faces_and_pairs_reconcile_with_reasons(packed):
    cfg, made, (faces, pairs, pack) = packed
    c = faces.counts
    assert c["images"] == len(made) + 1
    assert c["images"] == c["faces"] + sum(c["skipped"].values()) + sum(c["dropped"].values())
    assert c["dropped"]["no_face"] >= 1 and c["dropped"].get("blurry", 0) >= 1  # the sky; upscaled LFW faces
    p = pairs.counts
    assert p["faces"] == c["faces"]
    assert p["aligned"]["samples"] > 0 and p["misaligned"]["samples"] > 0
    assert p["erased"]["samples"] == p["aligned"]["samples"] + p["misaligned"]["samples"]
    assert p["aligned"]["dropped"]["unchanged"] >= 1  # the copy and its original: no edit between them
    assert pack.counts["counts_by_task"] == {t: n for t, n in p["samples"].items() if n}


def test_packed_pairs_are_one_person_and_erased_references_hide_the_face(packed):
    cfg, made, (_, _, pack) = packed
    from stages.corpus.ingest import load_catalog

    person = {}
    for rec in load_catalog(cfg.root):
        rel = rec.uri.split("/src/", 1)[1]
        person[rec.id] = made.get(rel, {}).get("person")
    tasks = set()
    for s in read_shard_set(pack.counts["uri"]):
        tasks.add(s.task)
        a, b = s.lineage.source_ids
        assert person[a] == person[b] == "astronaut", s.key  # other people and the blurry faces never pair
        target = _arr(s.target.image)
        if s.task == "reference_generation":
            assert [u.role.value for u in s.units] == ["edit", "reference"]
            edit, mask = _arr(s.units[0].image), _arr(s.units[0].mask) > 0
            assert mask.any() and not mask.all() and (edit[mask] == 0).all()
            assert np.array_equal(edit[~mask], target[~mask])
            assert _arr(s.units[1].image).shape == (150, 150, 3)
            assert "face-erased-reference" in [g.name for g in s.lineage.generators]
        else:
            edit = _arr(s.units[0].image)
            lo = cfg.synthesis.faces.band[0] if s.task.endswith("misaligned") else cfg.synthesis.faces.aligned_min
            assert s.lineage.scores["face_cosine"] >= lo
            if s.task == "facial_editing":
                assert edit.shape == target.shape
            assert not np.array_equal(edit, target)
    assert tasks == {"facial_editing", "facial_editing_misaligned", "reference_generation"}


def test_rerun_executes_nothing_and_a_changed_band_reruns_pairs_only(packed):
    cfg, _, (faces, pairs, _) = packed
    assert FacesStage(cfg).complete() and FacePairsStage(cfg).complete()
    narrow = cfg.model_copy(deep=True)
    narrow.synthesis.faces.band = (0.99, 0.995)
    assert FacesStage(narrow).complete() and not FacePairsStage(narrow).complete()


def test_aligned_instructions_name_the_change_and_keep_the_identity_margin(packed):
    cfg, made, (_, pairs, pack) = packed
    from mining.faces.pairs import face_pair_ok
    from stages.corpus.ingest import load_catalog

    a = pairs.counts["aligned"]
    assert sum(a["changes"].values()) == a["samples"]
    edit = {rec.id: made.get(rec.uri.split("/src/", 1)[1], {}).get("edit") for rec in load_catalog(cfg.root)}
    words = {("base", "warm"): "warm", ("base", "grey"): ("black-and-white", "greyscale"),
             ("grey", "warm"): ("colourise", "natural colours")}
    seen = 0
    for s in read_shard_set(pack.counts["uri"]):
        if s.task != "facial_editing":
            continue
        assert s.lineage.scores["face_threshold"] == cfg.synthesis.faces.aligned_min
        assert face_pair_ok(View(task=s.task, instruction=s.instruction, inputs=[], masks=[], target=np.zeros(1),
                                 scores=dict(s.lineage.scores)), cfg.supervision)[0] is None
        want = words.get(tuple(edit[i] for i in s.lineage.source_ids))
        if want is not None:  # a colour change over the whole photo: named, and not called a face edit
            seen += 1
            assert any(w in s.instruction.lower() for w in ((want,) if isinstance(want, str) else want)), s.instruction
            assert "face" not in s.instruction.lower()
    assert seen >= 2


def test_an_aligned_pair_whose_change_has_no_name_is_dropped_and_every_count_reconciles(tmp_path):
    src = tmp_path / "src"
    face_photos(src)
    base = np.asarray(Image.open(src / "faces" / "astronaut" / "base.png").convert("RGB"))
    Image.fromarray(np.roll(base, 2, axis=1)).save(src / "faces" / "astronaut" / "shifted.png")  # a reframing only
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["facial_editing"], "partition_size": 5, "max_side": 160})
    ingest(str(src), cfg.root, cfg.ingest)
    ex = LocalExecutor()
    ex.run(FacesStage(cfg))
    ex.run(FaceBucketsStage(cfg))
    pairs = ex.run(FacePairsStage(cfg))  # raises when the aligned, change-kind or erased counts do not add up
    a, e = pairs.counts["aligned"], pairs.counts["erased"]
    assert a["dropped"].get("unnamed_change", 0) >= 1 and "photo" not in a["changes"], a
    assert e["pairs"] == a["samples"] == e["samples"] + sum(e["dropped"].values()), (a, e)  # one per pair kept
