import io

import numpy as np
import torch
import pytest
import skimage.data
from PIL import Image

from schemas.config import MAP_TASKS, SYNTH_TASKS, TEXT_TASKS, RunConfig
from store import storage
from runtime.executors import LocalExecutor
from stages.corpus.ingest import ingest
from stages.synthesis.segment import SegmentStage
from store.shard_reader import read_shard_set
from stages.synthesis.objects import ObjectsStage
from stages.synthesis.pack import SynthPackStage
from stages.synthesis.repaint import RepaintStage

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")


def _save(name: str, folder) -> None:
    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    im.thumbnail((128, 128))
    im.save(folder / f"{name}.png")


def _stages(cfg):
    return [SegmentStage(cfg), ObjectsStage(cfg), RepaintStage(cfg), SynthPackStage(cfg, shard_name="synth")]


def _run(cfg):
    ex = LocalExecutor()
    return [ex.run(s) for s in _stages(cfg)]


def _arr(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in PHOTOS[:4]:
        _save(name, src)
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": [t for t in SYNTH_TASKS if t not in TEXT_TASKS + MAP_TASKS],
                               "partition_size": 2, "max_side": 128,  # the text and maps stages have their own tests
                               # cv2's fills of these thumbnails are smears (test_smear_and_not_object_drops_...);
                               # the tests on this corpus need removals that pass
                               "verify": {"max_smear_ratio": 1e6}},
                    supervision={"smear_max_ratio": 1e6})
    ingest(str(src), cfg.root, cfg.ingest)
    return src, cfg


def test_every_sample_keeps_the_source_outside_its_mask_and_counts_reconcile(corpus):
    _, cfg = corpus
    seg, obj, rep, pack = _run(cfg)
    c = seg.counts
    assert c["images"] == c["segmented"] == 4 and c["regions"] == c["kept"] + sum(c["dropped"].values())
    assert obj.counts["candidates"] == obj.counts["samples"] + sum(obj.counts["dropped"].values())
    n_obj = obj.counts["samples"]
    assert n_obj > 0 and rep.counts["samples"] == {"inpainting": 4, "outpainting": 4}
    assert pack.counts["counts_by_task"] == {"object_removal": n_obj, "object_addition": n_obj, "inpainting": 4,
                                             "outpainting": 4, "layer_decouple": n_obj, "layer_fusion": n_obj}
    by_key = {}
    for s in read_shard_set(pack.counts["uri"]):
        edit, target, mask = _arr(s.units[0].image), _arr(s.target.image), _arr(s.units[0].mask) > 0
        assert edit.shape[:2] == mask.shape and mask.any() and not mask.all()
        assert np.array_equal(edit[~mask], target[~mask]), s.key  # outside the mask: the source's pixels
        assert not np.array_equal(edit[mask], target[mask]), s.key  # inside: something to do
        assert ("{image}" in s.instruction) != ("{image2}" in s.instruction) and len(s.lineage.source_ids) == 1
        gens = [g.name for g in s.lineage.generators]
        if s.task == "layer_decouple":  # the object kept, everything else white
            assert (target[mask] == 255).all()
        if s.task == "layer_fusion":  # background + the object on white -> the source
            assert [u.role.value for u in s.units] == ["edit", "reference"] and s.units[1].mask is None
            assert np.array_equal(_arr(s.units[1].image), by_key[s.key.replace("fusion", "decouple")][1])
        if not s.task.endswith("painting"):
            assert gens[:3] == ["regions-felzenszwalb", "ace-b52-mask-filters", "cv2-inpaint-telea"]
            assert s.lineage.scores["inside_change"] >= cfg.synthesis.verify.min_change
        else:
            assert (edit[mask] == 0).all()  # blanked: the answer is not in the edit image
        by_key[s.key] = (edit, target, mask)
    for key, (edit, target, mask) in by_key.items():  # addition is the exact reverse of removal
        if key.startswith("object_removal-"):
            a_edit, a_target, a_mask = by_key[key.replace("object_removal-", "object_addition-")]
            assert np.array_equal(a_edit, target) and np.array_equal(a_target, edit) and np.array_equal(a_mask, mask)


def test_a_rerun_rewrites_nothing_and_new_images_add_only_new_parts(corpus):
    src, cfg = corpus
    first = _run(cfg)
    root = storage.fs_path(cfg.root)[1]
    from pathlib import Path

    files = lambda: {p: p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    assert [r.counts for r in _run(cfg)] == [r.counts for r in first] and files() == before
    for name in PHOTOS[4:]:
        _save(name, src)
    ingest(str(src), cfg.root, cfg.ingest)  # a new generation of two images
    grown = _run(cfg)
    assert grown[0].counts["images"] == 6 and grown[0].items == 3
    after = files()
    old_parts = [p for p in before if "/synth/" in str(p) and "/part-" in str(p)]
    assert old_parts and all(after.get(p) == before[p] for p in old_parts)  # finished parts untouched
    assert grown[3].counts["counts_by_task"]["inpainting"] == 6


def test_counts_that_do_not_reconcile_stop_the_stage_before_its_marker(corpus):
    _, cfg = corpus
    _run(cfg)
    stage = ObjectsStage(cfg)
    part = stage.parts()[0]
    marker = storage.read_marker(part)
    marker["counts"]["samples"] += 1
    storage.write_marker(part, marker)
    storage.fs_path(stage.final_outputs()[0])[0].rm(storage.fs_path(stage.final_outputs()[0])[1])
    with pytest.raises(RuntimeError, match="candidate masks do not reconcile"):
        stage.finalize(stage.plan())
    assert storage.read_marker(stage.out) is None


def test_smear_and_not_object_drops_are_counted_and_reconcile(corpus):
    _, cfg = corpus
    default = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(
        update={"tasks": ["object_removal"], "verify": cfg.synthesis.verify.model_copy(update={"max_smear_ratio": 3.0})})})
    ex = LocalExecutor()
    seg = ex.run(SegmentStage(default)).counts
    assert seg["dropped"].get("not_object", 0) > 0 and seg["regions"] == seg["kept"] + sum(seg["dropped"].values())
    c = ex.run(ObjectsStage(default)).counts
    assert c["dropped"].get("smear", 0) > 0  # Telea on holes this large, in texture
    assert c["candidates"] == c["samples"] + sum(c["dropped"].values())


def test_a_removal_the_segmenter_finds_again_is_dropped_and_counted(corpus):
    _, cfg = corpus
    strict = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(
        update={"tasks": ["object_removal"], "verify": cfg.synthesis.verify.model_copy(update={"refind_iou": 0.05})})})
    ex = LocalExecutor()
    ex.run(SegmentStage(strict))
    c = ex.run(ObjectsStage(strict)).counts
    assert c["dropped"].get("refound", 0) > 0  # smooth cv2 fills are found again as regions at this threshold
    assert c["candidates"] == c["samples"] + sum(c["dropped"].values())


def test_unknown_synthesis_task_is_a_config_error():
    from schemas.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="unknown synthesis task 'object_swap'"):
        parse_config({"synthesis": {"tasks": ["object_swap"]}})


def test_named_objects_give_text_guided_inpainting_with_the_label_in_lineage(corpus):
    from tests.mining.objects.test_names import save_tiny_siglip

    _, cfg = corpus
    save_tiny_siglip(cfg.models_dir, "ViT-B-16-SigLIP")  # random weights: the labels mean nothing, the plumbing does
    named = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(update={"object_name_threshold": 1e-6})})
    _, obj, _, pack = _run(named)
    n = obj.counts["samples"]
    assert n > 0 and obj.counts["named"] == n  # every probability clears a threshold this low
    assert pack.counts["counts_by_task"]["inpainting_text_guided"] == n
    seen = 0
    for s in read_shard_set(pack.counts["uri"]):
        gens = {g.name for g in s.lineage.generators}
        if s.task in ("object_removal", "inpainting_text_guided"):
            label = s.lineage.labels["object_name"]
            assert "object-names:siglip:ViT-B-16-SigLIP" in gens and 0 < s.lineage.scores["object_name_prob"] <= 1
            assert label in s.instruction
        if s.task == "inpainting_text_guided":
            edit, target, mask = _arr(s.units[0].image), _arr(s.target.image), _arr(s.units[0].mask) > 0
            assert (edit[mask] == 0).all() and np.array_equal(edit[~mask], target[~mask])
            seen += 1
    assert seen == n


def test_the_artefact_classifier_drops_what_it_flags_with_a_reason(corpus):
    from mining.models.artefacts import ArtefactHead, artefact_path, save_artefact_head
    from tests.mining.objects.test_names import save_tiny_siglip

    _, cfg = corpus
    save_tiny_siglip(cfg.models_dir, "ViT-B-16-SigLIP")
    head = ArtefactHead(32)
    with torch.no_grad():  # a head that flags everything: every candidate that passes the other checks goes
        head.net[2].bias.fill_(50.0)
    save_artefact_head(head, artefact_path(cfg.models_dir, "all.safetensors"), "siglip:ViT-B-16-SigLIP")
    flagged = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(update={
        "tasks": ["object_removal"], "verify": cfg.synthesis.verify.model_copy(update={"artefact_classifier": "all.safetensors"})})})
    ex = LocalExecutor()
    ex.run(SegmentStage(flagged))
    c = ex.run(ObjectsStage(flagged)).counts
    assert c["samples"] == 0 and c["dropped"].get("artefact", 0) > 0
    assert c["candidates"] == sum(c["dropped"].values())


def test_with_mediapipe_present_the_person_mask_joins_the_regions(corpus, mp_models):
    import shutil

    import pyarrow.compute as pc

    from mining.models.mediapipe import mediapipe_dir
    from stages.corpus.ingest import load_catalog
    from stages.synthesis.segment import REGIONS

    _, cfg = corpus
    shutil.copytree(mediapipe_dir(mp_models), mediapipe_dir(cfg.models_dir))
    seg = LocalExecutor().run(SegmentStage(cfg))
    stage = SegmentStage(cfg)
    assert stage.segmenter.name == "regions-felzenszwalb+mediapipe-selfie-segmentation"
    astronaut = next(r.id for r in load_catalog(cfg.root) if r.uri.endswith("astronaut.png"))
    marker = storage.read_marker(stage.out)
    tables = [storage.read_parquet(storage.join(stage.out, p, REGIONS)) for p in marker["parts"]]
    rows = [r for t in tables for r in t.filter(pc.field("image_id") == astronaut).to_pylist()]
    assert seg.counts["regions"] == seg.counts["kept"] + sum(seg.counts["dropped"].values())
    from mining.models.mediapipe import PersonSegmenter
    from stages.synthesis.parts import load_source

    rec = next(r for r in load_catalog(cfg.root) if r.id == astronaut)
    person = PersonSegmenter(cfg.models_dir)(load_source(rec, cfg)[0])  # the model run on its own
    assert len(person) == 1
    want = (round(person[0].score, 6), round(float(person[0].mask.mean()), 6))
    assert want in {(round(r["score"], 6), round(r["area_frac"], 6)) for r in rows}  # the person is a region
    assert tables[0].schema.metadata[b"segmenter"].decode() == "regions-felzenszwalb+mediapipe-selfie-segmentation"
    off = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(update={"people": "off"})})
    assert SegmentStage(off).segmenter.name == "regions-felzenszwalb"


def test_chat_instructions_rewrite_single_input_samples_and_keep_the_template_otherwise(corpus):
    from tests.mining.instructions.test_writers import Stub

    _, cfg = corpus
    stub = Stub([("ok", {"instruction": None}), ("status", 400)])  # then "x {image}" for every other request
    try:
        chat = cfg.model_copy(update={
            "synthesis": cfg.synthesis.model_copy(update={"tasks": ["inpainting", "outpainting"],
                                                          "chat_instructions": True}),
            "mining": cfg.mining.model_copy(update={"instructions": cfg.mining.instructions.model_copy(
                update={"backend": "chat", "base_url": stub.url, "model": "vlm", "retries": 0})})})
        ex = LocalExecutor()
        ex.run(RepaintStage(chat))
        pack = SynthPackStage(chat, shard_name="synth-chat")
        item = ex.run(pack).execution  # the units' instruction counts, summed
        samples = list(read_shard_set(pack.out))
    finally:
        stub.close()
    assert item.counts["instructions"] == {"template_no_reply": 1, "chat_fallback": 1, "chat": 6, "chat_requests": 8,
                                          "chat_ok": 7, "chat_failed": 1, "chat_http_400": 1}
    assert pack.report().counts["instructions"] == item.counts["instructions"]  # in the marker: UI and CLI
    by_writer = {"chat": 0, "template": 0}
    for s in samples:
        gens = [g.name for g in s.lineage.generators]
        if s.instruction == "x {image}":
            assert gens[-1] == "chat"  # the writer is in its lineage
            by_writer["chat"] += 1
        else:  # the template, and no chat writer in its lineage
            assert "chat" not in gens and "{image}" in s.instruction
            by_writer["template"] += 1
    assert by_writer == {"chat": 6, "template": 2} and len(stub.requests) == 8
