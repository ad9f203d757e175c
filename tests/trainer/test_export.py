import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.trainer.test_lora import forward, randomize_lora, tiny_transformer
from trainer.export import (KOHYA_DOUBLE, KOHYA_SINGLE, export_diffusers_lora, export_full, export_kohya_lora,
                            kohya_state_dict)
from trainer.lora import add_lora, lora_delta, lora_layers

RANK, ALPHA = 4, 8.0  # scale alpha / rank = 2: exercises the scale folding


def _fill(pipe, seed=0):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 255
    return pipe(prompt="add a cat", image=image, mask_image=Image.fromarray(mask), height=64, width=64,
                num_inference_steps=2, max_sequence_length=64, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images[0]


def _pipe_around(transformer):
    from diffusers import FluxFillPipeline

    return FluxFillPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                            tokenizer_2=None, transformer=transformer)


def _adapted(**kw):
    t = tiny_transformer(**kw)
    base = forward(t)
    add_lora(t, rank=RANK, alpha=ALPHA)
    randomize_lora(t)
    return t, base


def test_diffusers_lora_round_trip_through_the_pipeline(tiny_base, tmp_path):
    from trainer.components import load_pipeline

    folder, _ = tiny_base  # saved before any adapter existed
    pipe = load_pipeline(folder)
    add_lora(pipe.transformer, rank=RANK, alpha=ALPHA)
    randomize_lora(pipe.transformer, std=0.2)
    adapted = _fill(pipe)
    path = export_diffusers_lora(pipe.transformer, tmp_path / "lora")
    assert path.name == "pytorch_lora_weights.safetensors" and path.is_file()

    fresh = load_pipeline(folder)
    base = _fill(fresh)
    fresh.load_lora_weights(tmp_path / "lora")
    loaded = _fill(fresh)
    assert np.abs(adapted - base).max() > 1e-2  # images in [0, 1]; the round trip is within 1e-5
    np.testing.assert_allclose(loaded, adapted, atol=1e-5)


def test_kohya_keys_alphas_and_fusion():
    t, _ = _adapted(num_layers=2, num_single_layers=2)
    sd = kohya_state_dict(t)
    modules = [f"lora_unet_double_blocks_{i}_{k}" for i in range(2) for k in KOHYA_DOUBLE] + \
        [f"lora_unet_single_blocks_{i}_{k}" for i in range(2) for k in KOHYA_SINGLE]
    assert set(sd) == {f"{m}.{p}" for m in modules for p in ("lora_down.weight", "lora_up.weight", "alpha")}
    for key in ("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                "lora_unet_double_blocks_1_txt_mod_lin.alpha",
                "lora_unet_double_blocks_1_img_mlp_2.lora_up.weight",
                "lora_unet_single_blocks_1_linear1.lora_up.weight",
                "lora_unet_single_blocks_0_modulation_lin.alpha",
                "lora_unet_single_blocks_0_linear2.lora_down.weight"):
        assert key in sd
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape == (3 * RANK, 32)
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"].shape == (3 * 32, 3 * RANK)
    assert sd["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (3 * 32 + 128, 4 * RANK)
    scale = ALPHA / RANK
    for m in modules:
        fused_rank = sd[f"{m}.lora_down.weight"].shape[0]
        assert sd[f"{m}.alpha"].ndim == 0 and sd[f"{m}.alpha"].item() == pytest.approx(fused_rank * scale)

    layers = dict(lora_layers(t))
    for kohya, prefix, parts in (("lora_unet_double_blocks_1_txt_attn_qkv", "transformer_blocks.1",
                                  KOHYA_DOUBLE["txt_attn_qkv"]),
                                 ("lora_unet_single_blocks_1_linear1", "single_transformer_blocks.1",
                                  KOHYA_SINGLE["linear1"])):
        down, up = sd[f"{kohya}.lora_down.weight"], sd[f"{kohya}.lora_up.weight"]
        fused = sd[f"{kohya}.alpha"] / down.shape[0] * (up @ down)  # how kohya / ComfyUI apply it
        expected = torch.cat([lora_delta(layers[f"{prefix}.{s}"]) for s in parts])
        torch.testing.assert_close(fused, expected)
        ranks = RANK * np.arange(len(parts) + 1)
        rows = np.cumsum([0] + [layers[f"{prefix}.{s}"].out_features for s in parts])
        for j in range(len(parts)):  # block-diagonal up: each part's rows read only its own rank slice
            off = up[rows[j]:rows[j + 1]].clone()
            off[:, ranks[j]:ranks[j + 1]] = 0
            assert torch.count_nonzero(off) == 0


@pytest.mark.parametrize("shape", [dict(num_layers=2, num_single_layers=0),
                                   dict(num_layers=0, num_single_layers=1, flux_width=True)],
                         ids=["double-blocks", "single-block-flux-width"])
def test_kohya_file_loads_like_the_diffusers_export(shape, tmp_path):
    # diffusers' converter splits single-block linear1 with FLUX.1's fixed widths, so single blocks are
    # checked at that width (one block, no double blocks, to stay cheap)
    t, base = _adapted(**shape)
    adapted = forward(t)
    export_diffusers_lora(t, tmp_path / "diffusers")
    kohya = export_kohya_lora(t, tmp_path / "ace_plus_lora.safetensors")
    assert all(k.startswith("lora_unet_") for k in load_file(kohya))
    t.delete_adapters("default")
    torch.testing.assert_close(forward(t), base, rtol=0, atol=0)

    pipe = _pipe_around(t)
    pipe.load_lora_weights(tmp_path / "diffusers", adapter_name="diffusers")
    from_diffusers = forward(t)
    pipe.delete_adapters("diffusers")
    pipe.load_lora_weights(str(kohya), adapter_name="kohya")
    from_kohya = forward(t)
    # the converter recovered the per-part LoRAs (block-diagonal detected), not rank-3r / 4r copies
    assert all(layer.lora_A["kohya"].weight.shape[0] == RANK for _, layer in lora_layers(t, "kohya"))
    assert (adapted - base).abs().max() > 1e-2
    torch.testing.assert_close(from_diffusers, adapted, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_kohya, from_diffusers, rtol=1e-4, atol=1e-5)


def test_kohya_folds_part_specific_scales(tmp_path):
    t, _ = _adapted(num_layers=1, num_single_layers=0)
    layers = dict(lora_layers(t))
    layers["transformer_blocks.0.attn.to_k"].scaling["default"] = 0.5  # q and v keep 2.0
    adapted = forward(t)
    kohya = export_kohya_lora(t, tmp_path / "k.safetensors")
    assert load_file(kohya)["lora_unet_double_blocks_0_img_attn_qkv.alpha"].item() == 3 * RANK * ALPHA / RANK
    t.delete_adapters("default")
    pipe = _pipe_around(t)
    pipe.load_lora_weights(str(kohya))
    torch.testing.assert_close(forward(t), adapted, rtol=1e-4, atol=1e-5)


def test_export_full_round_trip(tmp_path):
    from diffusers import FluxTransformer2DModel

    t, base = _adapted(num_layers=1, num_single_layers=1)
    adapted = forward(t)
    export_full(t, tmp_path / "full")
    assert (tmp_path / "full" / "diffusion_pytorch_model.safetensors").is_file()
    keys = load_file(tmp_path / "full" / "diffusion_pytorch_model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in keys)
    merged = FluxTransformer2DModel.from_pretrained(tmp_path / "full").eval()
    torch.testing.assert_close(forward(merged), adapted, rtol=1e-4, atol=1e-5)
    assert any(".lora_A." in n for n, _ in t.named_parameters())  # the live model keeps its adapter

    plain = tiny_transformer(num_layers=1, num_single_layers=1)
    export_full(plain, tmp_path / "plain")
    reloaded = FluxTransformer2DModel.from_pretrained(tmp_path / "plain").eval()
    expected, got = plain.state_dict(), reloaded.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    # bit-equal weights; a from_pretrained model's forward differs from the in-memory one by float rounding
    torch.testing.assert_close(forward(reloaded), base, rtol=1e-5, atol=1e-6)
