"""Named objects (ACE B.5.2): an open-vocabulary detector (transformers' OWLv2 classes at a tiny random config,
saved with save_pretrained and loaded from the models directory like a pulled one) tags each image; its boxes
prompt SAM (segment-anything's classes, tiny); the label becomes `{object_name}` and is in lineage."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from mining.objects.detect import GroundedSegmenter, OpenVocabDetector, detector_dir, make_detector
from mining.objects.segment import SamSegmenter, file_md5, sam_path

VOCAB = ("cat", "dog", "person", "rocket")


def save_tiny_owlv2(folder, seed: int = 0):
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from trainer.components import tiny_clip_tokenizer

    torch.manual_seed(seed)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = Owlv2Config(text_config={**small, "max_position_embeddings": 16},
                      vision_config={**small, "image_size": 64, "patch_size": 16}, projection_dim=32)
    tok = tiny_clip_tokenizer()
    tok.model_max_length = 16
    Owlv2ForObjectDetection(cfg).eval().save_pretrained(folder)  # safetensors: the released format
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                   tokenizer=tok).save_pretrained(folder)
    return folder


def save_tiny_sam(models_dir, monkeypatch):
    """A tiny SAM where the released vit_b checkpoint goes; its md5 stands in for the pinned one and the vit_b
    builder builds the tiny architecture, so the stage loads it through its normal path."""
    import segment_anything

    import mining.objects.segment as seg
    from tests.mining.objects.test_segment import tiny_sam

    torch.manual_seed(0)
    path = sam_path(models_dir, "vit_b")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_sam().state_dict(), path)
    monkeypatch.setitem(seg.SAM_CHECKPOINTS, "vit_b", (path.name, file_md5(path)))
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", lambda checkpoint=None: tiny_sam())
    return path


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    return save_tiny_owlv2(detector_dir(tmp_path_factory.mktemp("models")))


def _image():
    return np.ascontiguousarray(skimage.data.astronaut()[::4, ::4])  # 128 x 128


def test_the_detector_loads_from_its_folder_and_names_boxes_inside_the_image(owl):
    det = OpenVocabDetector(owl, VOCAB, threshold=0.0)
    found = det(_image())
    assert 0 < len(found) <= det.max_detections
    for d in found:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 and x1 - x0 >= 4 and y1 - y0 >= 4
        assert d.label in VOCAB and 0 <= d.score <= 1
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    assert det(_image()) == found  # deterministic
    assert OpenVocabDetector(owl, VOCAB, threshold=1.0)(_image()) == []  # the threshold applies
    # the version names weights and vocabulary: another vocabulary is another detector
    assert OpenVocabDetector(owl, VOCAB[:2]).version != det.version


def test_make_detector_auto_only_with_its_folder_and_owlv2_is_a_clear_error_without(tmp_path, owl):
    assert make_detector("auto", tmp_path, VOCAB, 0.2) is None
    assert make_detector("off", owl.parents[1], VOCAB, 0.2) is None
    assert isinstance(make_detector("auto", owl.parents[1], VOCAB, 0.2), OpenVocabDetector)
    from mining.models.embedders import MissingModelError

    with pytest.raises(MissingModelError, match="models pull owlv2"):
        make_detector("owlv2", tmp_path, VOCAB, 0.2).setup()


def test_grounded_regions_are_sam_masks_of_the_detected_boxes_with_their_labels(tmp_path, owl, monkeypatch):
    sam = SamSegmenter(save_tiny_sam(tmp_path, monkeypatch), "vit_b")
    seg = GroundedSegmenter(OpenVocabDetector(owl, VOCAB, threshold=0.0), sam)
    img = _image()
    dets = seg.detector(img)
    regions = seg(img)
    assert len(regions) == len(dets) > 0
    for r, d in zip(regions, dets):
        assert r.label == d.label and r.label_score == d.score and r.mask.shape == img.shape[:2]
    assert seg.name == "detector:owlv2-base-patch16-ensemble+sam-vit_b"


def test_named_objects_through_the_segment_and_objects_stages(tmp_path, owl, monkeypatch):
    """With a tiny detector configured, every removal the objects stage keeps is named by the detector's label,
    which reaches the instruction, the labels and lineage; without the detector the same run keeps the
    class-agnostic segmenter."""
    import json
    import shutil

    from PIL import Image

    from runtime.executors import LocalExecutor
    from schemas.config import RunConfig
    from stages.corpus.ingest import ingest
    from stages.synthesis.objects import ObjectsStage
    from stages.synthesis.segment import REGIONS, SegmentStage
    from store import storage

    src = tmp_path / "src"
    src.mkdir()
    for name in ("astronaut", "chelsea"):
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        im.thumbnail((128, 128))
        im.save(src / f"{name}.png")
    models = tmp_path / "models"
    save_tiny_sam(models, monkeypatch)
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(models),
                    synthesis={"tasks": ["object_removal", "inpainting_text_guided"], "max_side": 128,
                               "people": "off", "object_namer": "generic", "object_vocabulary": list(VOCAB),
                               "object_detector_threshold": 0.0,
                               # random weights: SAM's masks of the boxes are not object-like; let them through
                               "filters": {"min_objectness": 0.0, "min_box_fill": 0.0, "max_border_frac": 1.0,
                                           "max_area_frac": 1.0, "min_area_frac": 0.0, "max_aspect": 100.0,
                                           "min_side_px": 1, "max_overlap": 1.0},
                               "verify": {"max_smear_ratio": 1e6, "min_change": 0.0, "max_seam_ratio": 1e6}})
    ingest(str(src), cfg.root, cfg.ingest)
    assert SegmentStage(cfg).segmenter.name == "sam-vit_b"  # no detector folder: SAM's automatic masks
    shutil.copytree(owl, detector_dir(models))
    ex = LocalExecutor()
    seg_stage = SegmentStage(cfg)
    assert seg_stage.segmenter.name == "detector:owlv2-base-patch16-ensemble+sam-vit_b"
    ex.run(seg_stage)
    rows = [r for p in storage.read_marker(seg_stage.out)["parts"]
            for r in storage.read_parquet(storage.join(seg_stage.out, p, REGIONS)).to_pylist()]
    assert rows and all(r["label"] in VOCAB and r["label_score"] is not None for r in rows)
    obj = ex.run(ObjectsStage(cfg))
    n = obj.counts["samples"]
    assert n > 0 and obj.counts["named"] == n
    records = [r for p in storage.read_marker(ObjectsStage(cfg).out)["parts"]
               for r in storage.read_parquet(storage.join(ObjectsStage(cfg).out, p, "records.parquet")).to_pylist()]
    assert len(records) == n
    for rec in records:
        label = json.loads(rec["labels"])["object_name"]
        assert label in VOCAB
        assert label in json.loads(rec["instructions"])["inpainting_text_guided"]
        assert any(g[0] == "detector:owlv2-base-patch16-ensemble+sam-vit_b" for g in json.loads(rec["generators"]))
        assert 0 <= json.loads(rec["scores"])["object_name_prob"] <= 1
