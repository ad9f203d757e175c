"""The demo with a chat endpoint configured (the test stub): it captions images and packs text_to_image."""
import pytest

from flows.demo import DEMO_MINING, demo_config, demo_flow
from store.shard_reader import read_shard_set
from tests.mining.instructions.test_writers import Stub


def test_the_demo_adds_text_to_image_only_with_a_captioning_model(tmp_path):
    assert "text_to_image" not in demo_config(tmp_path, None)["synthesis"]["tasks"]
    chat = {"mining": {**DEMO_MINING.model_dump(mode="json"),
                       "instructions": {"backend": "chat", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    assert demo_config(tmp_path, chat)["synthesis"]["tasks"][-1] == "text_to_image"


@pytest.mark.slow
def test_demo_with_an_endpoint_packs_text_to_image_samples(tmp_path, prefect_results):
    stub = Stub([("ok", {"caption": f"A photo, caption number {k}."}) for k in range(400)])
    try:
        mining = {**DEMO_MINING.model_dump(mode="json"),
                  "instructions": {"backend": "chat", "base_url": stub.url, "model": "stub-vlm", "retries": 0}}
        # synthesis: captions only (the other tasks have their own demo test), on a fifth of the corpus
        res = demo_flow(out=str(tmp_path / "demo"), train=False,
                        config={"mining": mining, "synthesis": {"tasks": [], "fraction": 0.2}})
    finally:
        stub.close()
    syn = res["mined"]["synthesis"]
    captioned = syn["captions"]["samples"]["text_to_image"]
    print(f"demo with the stub endpoint: {syn['captions']['images']} images chosen, {captioned} text_to_image "
          f"samples captioned; shard set {syn['shards'].get('samples')} samples")
    assert captioned > 0 and captioned == syn["captions"]["read"] == len(stub.requests)
    samples = [s for s in read_shard_set(syn["shards"]["uri"]) if s.task == "text_to_image"]
    assert len(samples) == captioned
    assert all(s.units == [] and s.instruction.startswith("A photo, caption number") for s in samples)
    assert all(s.lineage.generators[-1].name == "chat-caption" for s in samples)
