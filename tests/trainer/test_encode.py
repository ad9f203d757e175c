import numpy as np
import torch

from schemas.config import TrainConfig
from schemas.shard_layout import encode_sample
from tests.conftest import make_sample
from trainer.encode import decode_encoded, encode_sample_bytes, encoded_meta
from trainer.lcu import build_inputs
from trainer.panels import sample_panels


def test_encoded_blob_round_trips_inputs_embeddings_and_metadata(tiny_base):
    folder, pipe = tiny_base
    cfg = TrainConfig(max_tokens=24, max_sequence_length=32, vae_sample=False)
    sample = make_sample(3, np.random.default_rng(1), with_mask=True)
    data = encode_sample_bytes(pipe, encode_sample(sample), cfg, folder.name)
    meta = encoded_meta(data)
    assert meta == {"key": sample.key, "task": sample.task, "instruction": sample.instruction, "form": "canvas",
                    "group": "src3|tgt3", "max_tokens": "24", "base": folder.name, "layout": "in_place", "repainting_scale": "0.5",
                    "ref_scale_pad": "True", "vae_sample": "False"}
    meta2, enc = decode_encoded(data)
    ref = build_inputs(sample_panels(sample, 24, "canvas"), "canvas", pipe.vae, 0.5)
    assert meta2 == meta and torch.equal(enc.inputs.is_target, ref.is_target)
    assert torch.allclose(enc.inputs.x0, ref.x0, atol=1e-5) and torch.allclose(enc.inputs.cond, ref.cond, atol=1e-5)
    embeds, pooled, _ = pipe.encode_prompt(prompt=[sample.instruction], prompt_2=None, max_sequence_length=32)
    assert torch.allclose(enc.prompt_embeds, embeds, atol=1e-5) and torch.allclose(enc.pooled, pooled, atol=1e-5)

    sampled = encode_sample_bytes(pipe, encode_sample(sample), cfg.model_copy(update={"vae_sample": True}), "b")
    again = encode_sample_bytes(pipe, encode_sample(sample), cfg.model_copy(update={"vae_sample": True}), "b")
    x_sampled = decode_encoded(sampled)[1].inputs.x0
    assert torch.equal(x_sampled, decode_encoded(again)[1].inputs.x0)  # one draw per (seed, key)
    assert not torch.allclose(x_sampled, ref.x0, atol=1e-3)
