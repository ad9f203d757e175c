import json

import numpy as np
import pytest

from mining.instructions.captions import LocalCaptioner, make_captioner
from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from stages.corpus.ingest import ingest, load_catalog
from stages.synthesis.captions import CaptionStage, captions, fill_caption
from stages.synthesis.pack import SynthPackStage
from store.shard_reader import read_shard_set
from tests.conftest import random_image
from tests.mining.instructions.test_writers import Stub


@pytest.fixture
def root(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(3)
    for k in range(5):
        random_image(rng, 96, 80).save(src / f"im{k}.png")
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["text_to_image"], "partition_size": 3, "max_side": 64})
    ingest(str(src), cfg.root, cfg.ingest)
    (tmp_path / "models").mkdir()
    return cfg


def _with_endpoint(cfg: RunConfig, url: str) -> RunConfig:
    ic = cfg.mining.instructions.model_copy(update={"backend": "chat", "base_url": url, "model": "vlm", "retries": 0})
    return cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"instructions": ic})})


def test_captions_from_the_endpoint_become_text_to_image_samples(root):
    # five images: a caption, a declined one, a failed call, one naming an image, then captions for the rest
    stub = Stub([("ok", {"caption": "A red kite over a beach."}), ("ok", {"caption": None}), ("status", 400),
                 ("ok", {"caption": "Like {image} but darker."}), ("ok", {"caption": "Two cups on a table."})])
    try:
        cfg = _with_endpoint(root, stub.url)
        ex = LocalExecutor()
        rep = ex.run(CaptionStage(cfg))
        pack = SynthPackStage(cfg, shard_name="t2i")
        ex.run(pack)
        samples = list(read_shard_set(pack.out))
    finally:
        stub.close()
    c = rep.counts
    assert c["images"] == 5 and c["samples"] == {"text_to_image": 2}
    assert c["dropped"] == {"caption_failed": 1, "caption_names_an_image": 1, "no_caption": 1}
    assert len(stub.requests) == 5
    req = stub.requests[0]["messages"]
    assert "caption" in req[0]["content"] and [p["type"] for p in req[1]["content"]] == ["text", "image_url"]
    assert sorted(s.instruction for s in samples) == ["A red kite over a beach.", "Two cups on a table."]
    ids = {r.id for r in load_catalog(cfg.root)}
    for s in samples:
        assert s.task == "text_to_image" and s.units == [] and s.caption == s.instruction
        assert s.lineage.source_ids[0] in ids
        assert [(g.name, g.version) for g in s.lineage.generators] == [("chat-caption", "vlm")]
    assert sorted(captions(CaptionStage(cfg).out).values()) == ["A red kite over a beach.", "Two cups on a table."]


def test_without_a_captioning_model_the_stage_refuses_and_never_uses_a_template(root):
    with pytest.raises(ValueError, match="text_to_image needs a captioning model: .* is 'template'"):
        LocalExecutor().run(CaptionStage(root))
    from flows.preflight import PreflightError, preflight

    with pytest.raises(PreflightError, match="text_to_image needs a captioning model"):
        preflight(root, models=True)


class _FakeVLM:
    """Stands in for mining.models.vlm.LocalVLM's generate step: one scripted text per prompt."""

    def __init__(self, texts):
        self.texts, self.prompts = list(texts), []

    def __call__(self, prompts):
        self.prompts += prompts
        return [self.texts.pop(0) for _ in prompts]


def test_local_captioner_parses_validates_and_counts():
    rng = np.random.default_rng(0)
    from tests.conftest import png

    img = png(random_image(rng))
    vlm = _FakeVLM(['{"caption": "A grey cat."}', "not json", '{"caption": null}', '{"caption": "' + "x" * 50 + '"}'])
    cap = LocalCaptioner(vlm, batch_size=3, max_chars=20, name="local-vlm-caption:tiny")
    out = list(cap.caption_many([(f"i{k}", img, "png") for k in range(4)]))
    assert out[0] == "A grey cat." and out[2] is None
    assert "not JSON" in str(out[1]) and "too long" in str(out[3])
    assert len(vlm.prompts) == 4 and len(vlm.prompts[0][1]) == 1  # one image per prompt
    assert cap.counts == {"local_images": 4, "local_ok": 2, "local_failed": 2, "local_bad_reply": 1,
                          "local_too_long": 1}


def test_make_captioner_needs_a_model_name(root):
    ic = root.mining.instructions.model_copy(update={"backend": "chat", "model": ""})
    with pytest.raises(ValueError, match="need mining.instructions.model"):
        make_captioner(ic, "/tmp/cache", root.models_dir)


def test_fill_caption():
    assert fill_caption("Extend {image} outward.", None) == "Extend {image} outward."
    assert fill_caption("Paint {caption} into {image}.", "A red kite.") == "Paint A red kite into {image}."
    assert fill_caption("Paint {caption} into {image}.", None) is None
    assert json.dumps(fill_caption("{caption}", "x")) == '"x"'


def test_captions_reach_the_map_to_image_samples_of_the_same_images(root):
    from stages.synthesis.maps import MapsStage

    cfg = root.model_copy(update={"synthesis": root.synthesis.model_copy(
        update={"tasks": ["text_to_image", "control_canny", "analysis_canny"]})})
    stub = Stub([("ok", {"caption": f"Caption {k}."}) for k in range(5)])
    try:
        cfg = _with_endpoint(cfg, stub.url)
        ex = LocalExecutor()
        ex.run(CaptionStage(cfg))
        ex.run(MapsStage(cfg))
        pack = SynthPackStage(cfg, shard_name="t2i-maps")
        rep = ex.run(pack)
        samples = list(read_shard_set(pack.out))
    finally:
        stub.close()
    caps = captions(CaptionStage(cfg).out)
    control = [s for s in samples if s.task == "control_canny"]
    assert control and len(caps) == 5
    for s in samples:
        if s.task == "control_canny":
            assert s.instruction.endswith(f" The image shows: {caps[s.lineage.source_ids[0]].rstrip('.')}.")
            assert s.lineage.generators[-1].name == "chat-caption"
        elif s.task == "analysis_canny":  # image -> map: the caption says nothing about a map
            assert "The image shows" not in s.instruction
    assert rep.counts["instructions"]["captioned"] == len(control)


def test_with_a_local_vlm_the_stage_holds_the_model_and_its_resources(root, tmp_path):
    from mining.models.vlm import LocalVLM

    ic = root.mining.instructions.model_copy(update={"backend": "local_vlm", "local_model": "vlm",
                                                     "local_device": "cuda"})
    st = CaptionStage(root.model_copy(update={"mining": root.mining.model_copy(update={"instructions": ic})}))
    assert isinstance(st.worker_model(), LocalVLM) and st.worker_model() is st.worker_model()
    assert st.worker_resources().gpus == 1
    cap = st.captioner()
    assert isinstance(cap, LocalCaptioner) and cap.model is st.worker_model() and cap.name == "local-vlm-caption:vlm"
    assert st.captioner_name() == cap.name
    assert CaptionStage(root).worker_model() is None  # the endpoint: no model in the worker


@pytest.mark.slow
def test_a_tiny_random_local_vlm_captions_through_the_stage_and_every_image_is_counted(root, tmp_path):
    from tests.mining.instructions.test_local_vlm import tiny_llava

    tiny_llava(tmp_path / "models" / "vlm" / "tiny-llava")
    ic = root.mining.instructions.model_copy(update={"backend": "local_vlm", "local_model": "vlm/tiny-llava",
                                                     "local_device": "cpu", "max_tokens": 8, "local_batch_size": 2})
    cfg = root.model_copy(update={"mining": root.mining.model_copy(update={"instructions": ic})})
    rep = LocalExecutor().run(CaptionStage(cfg))
    c = rep.counts
    # random weights write gibberish: each image is a validated caption or a counted failure, never a template
    assert c["read"] == 5 == sum(c["samples"].values()) + sum(c["dropped"].values())
    calls = c["calls"]
    assert calls["local_images"] == 5 and calls.get("local_ok", 0) + calls.get("local_failed", 0) == 5
    assert c["dropped"].get("caption_failed", 0) == calls.get("local_failed", 0)
