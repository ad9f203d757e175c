import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.trainer.test_lora import forward, randomize_lora, tiny_transformer
from trainer.export import (KOHYA_DOUBLE, KOHYA_SINGLE, export_diffusers_lora, export_full, export_kohya_lora,
                            kohya_state_dict, merged_state_dict)
from trainer.lora import add_lora, lora_delta, lora_layers, tie_fused_lora

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


def _adapted(fused=True, **kw):
    t = tiny_transformer(**kw)
    base = forward(t)
    add_lora(t, rank=RANK, alpha=ALPHA, fused=fused)
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


@pytest.mark.parametrize("fused", [True, False], ids=["shared-A", "per-part-A"])
def test_kohya_keys_alphas_and_fusion(fused):
    t, _ = _adapted(fused=fused, num_layers=2, num_single_layers=2)
    sd = kohya_state_dict(t, dtype=torch.float32)
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
    k = 1 if fused else 3  # shared A: one rank-r LoRA on the fused linear, as released; else rank 3r
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape == (k * RANK, 32)
    assert sd["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"].shape == (3 * 32, k * RANK)
    assert sd["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (3 * 32 + 128, (1 if fused else 4) * RANK)
    for m in modules:  # alpha = rank: kohya's alpha / rank is 1, so merges that ignore alpha are exact
        assert sd[f"{m}.alpha"].ndim == 0 and sd[f"{m}.alpha"].item() == sd[f"{m}.lora_down.weight"].shape[0]

    layers = dict(lora_layers(t))
    for kohya, prefix, parts in (("lora_unet_double_blocks_1_txt_attn_qkv", "transformer_blocks.1",
                                  KOHYA_DOUBLE["txt_attn_qkv"]),
                                 ("lora_unet_single_blocks_1_linear1", "single_transformer_blocks.1",
                                  KOHYA_SINGLE["linear1"])):
        down, up = sd[f"{kohya}.lora_down.weight"], sd[f"{kohya}.lora_up.weight"]
        expected = torch.cat([lora_delta(layers[f"{prefix}.{s}"]) for s in parts])
        torch.testing.assert_close(up @ down, expected)  # no alpha applied
        if fused:
            continue
        ranks = RANK * np.arange(len(parts) + 1)
        rows = np.cumsum([0] + [layers[f"{prefix}.{s}"].out_features for s in parts])
        for j in range(len(parts)):  # block-diagonal up: each part's rows read only its own rank slice
            off = up[rows[j]:rows[j + 1]].clone()
            off[:, ranks[j]:ranks[j + 1]] = 0
            assert torch.count_nonzero(off) == 0


def _bfl_weight(transformer, prefix: str, parts: tuple[str, ...]) -> torch.Tensor:
    modules = dict(transformer.named_modules())
    ws = []
    for s in parts:
        m = modules[f"{prefix}.{s}"]
        ws.append((m.get_base_layer() if hasattr(m, "get_base_layer") else m).weight.detach().float())
    return torch.cat(ws)


@pytest.mark.parametrize("fused", [True, False], ids=["shared-A", "per-part-A"])
def test_kohya_merged_the_released_way_equals_the_diffusers_path(fused, tmp_path):
    """ACE++'s merge_comfyui_lora: W[bfl] += up @ down, alpha ignored; diffusers: load the LoRA, fuse it."""
    from safetensors.torch import load_file as load

    t, _ = _adapted(fused=fused, num_layers=1, num_single_layers=1)  # alpha / rank = 2: folded into up
    kohya_bf16 = load(export_kohya_lora(t, tmp_path / "bf16.safetensors"))
    kohya_fp32 = load(export_kohya_lora(t, tmp_path / "fp32.safetensors", dtype=torch.float32))
    assert all(v.dtype == torch.bfloat16 for v in kohya_bf16.values())
    export_diffusers_lora(t, tmp_path / "diffusers")

    fresh = tiny_transformer(num_layers=1, num_single_layers=1)
    pipe = _pipe_around(fresh)
    pipe.load_lora_weights(tmp_path / "diffusers")
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    plain = tiny_transformer(num_layers=1, num_single_layers=1)
    for prefix, table, bfl in (("transformer_blocks", KOHYA_DOUBLE, "double_blocks"),
                               ("single_transformer_blocks", KOHYA_SINGLE, "single_blocks")):
        for name, parts in table.items():
            key = f"lora_unet_{bfl}_0_{name}"
            base = _bfl_weight(plain, f"{prefix}.0", parts)
            via_diffusers = _bfl_weight(fresh, f"{prefix}.0", parts)
            delta = via_diffusers - base
            assert delta.abs().max() > 1e-3, key
            down, up = kohya_fp32[f"{key}.lora_down.weight"], kohya_fp32[f"{key}.lora_up.weight"]
            torch.testing.assert_close(base + up @ down, via_diffusers, rtol=0, atol=1e-5)
            down, up = kohya_bf16[f"{key}.lora_down.weight"].float(), kohya_bf16[f"{key}.lora_up.weight"].float()
            err = (base + up @ down - via_diffusers).abs().max()
            assert err <= 2e-2 * delta.abs().max(), (key, float(err))  # bf16 rounding of the factors only


def test_shared_a_export_is_smaller_and_bf16_halves_it(tmp_path):
    fused, _ = _adapted(fused=True, num_layers=1, num_single_layers=1)
    parts, _ = _adapted(fused=False, num_layers=1, num_single_layers=1)
    size = lambda t, name, dt: export_kohya_lora(t, tmp_path / name, dtype=dt).stat().st_size  # noqa: E731
    padded, dense = size(parts, "p32", torch.float32), size(fused, "f32", torch.float32)
    assert dense < padded
    nbytes = lambda sd: sum(v.numel() * v.element_size() for v in sd.values())  # noqa: E731
    assert 2 * nbytes(kohya_state_dict(fused)) == nbytes(kohya_state_dict(fused, dtype=torch.float32))
    assert size(fused, "b16", torch.bfloat16) < 0.6 * dense  # the file: tensors + a JSON header
    sd = kohya_state_dict(fused)
    assert torch.count_nonzero(sd["lora_unet_single_blocks_0_linear1.lora_up.weight"]) == 224 * RANK  # dense


def test_tied_parts_share_one_down_projection():
    t, _ = _adapted(fused=True, num_layers=1, num_single_layers=1)
    layers = dict(lora_layers(t))
    for prefix, group in (("transformer_blocks.0", ("attn.to_q", "attn.to_k", "attn.to_v")),
                          ("transformer_blocks.0", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
                          ("single_transformer_blocks.0", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"))):
        a = [layers[f"{prefix}.{s}"].lora_A["default"].weight for s in group]
        assert all(x is a[0] for x in a)
    assert layers["transformer_blocks.0.attn.to_out.0"].lora_A["default"].weight is not a[0]
    assert tie_fused_lora(t) == 3  # idempotent: 3 groups, already tied


@pytest.mark.parametrize("shape", [dict(num_layers=2, num_single_layers=0),
                                   dict(num_layers=0, num_single_layers=1, flux_width=True)],
                         ids=["double-blocks", "single-block-flux-width"])
def test_kohya_file_loads_like_the_diffusers_export(shape, tmp_path):
    # diffusers' converter splits single-block linear1 with FLUX.1's fixed widths, so single blocks are
    # checked at that width (one block, no double blocks, to stay cheap)
    t, base = _adapted(**shape)
    adapted = forward(t)
    export_diffusers_lora(t, tmp_path / "diffusers")
    kohya = export_kohya_lora(t, tmp_path / "ace_plus_lora.safetensors", dtype=torch.float32)
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
    kohya = export_kohya_lora(t, tmp_path / "k.safetensors", dtype=torch.float32)
    assert load_file(kohya)["lora_unet_double_blocks_0_img_attn_qkv.alpha"].item() == RANK  # shared A: rank r
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


@pytest.mark.parametrize("fused", [True, False], ids=["shared-A", "per-part-A"])
def test_kohya_file_of_a_toy_width_loads_through_our_mapping(fused, tmp_path):
    """diffusers' converter asserts FLUX.1's widths; `load_lora` maps the kohya file by the model's own shapes and
    gives the diffusers export's weights and output."""
    from trainer.infer import load_lora

    t, base = _adapted(fused=fused, num_layers=1, num_single_layers=1)
    adapted = forward(t)
    export_diffusers_lora(t, tmp_path / "diffusers")
    kohya = export_kohya_lora(t, tmp_path / "comfyui_lora.safetensors", dtype=torch.float32)
    fresh = tiny_transformer(num_layers=1, num_single_layers=1)
    pipe = _pipe_around(fresh)
    with pytest.raises(AssertionError):  # the reason for our own mapping
        pipe.load_lora_weights(str(kohya), adapter_name="converter")
    pipe.load_lora_weights(tmp_path / "diffusers", adapter_name="diffusers")
    load_lora(pipe, kohya, adapter_name="kohya")
    via_diffusers, via_kohya = merged_state_dict(fresh, "diffusers"), merged_state_dict(fresh, "kohya")
    assert via_diffusers.keys() == via_kohya.keys()
    for k in via_diffusers:
        torch.testing.assert_close(via_kohya[k], via_diffusers[k], rtol=0, atol=1e-5)
    pipe.set_adapters("kohya")
    from_kohya = forward(fresh)
    pipe.set_adapters("diffusers")
    assert (adapted - base).abs().max() > 1e-2
    torch.testing.assert_close(forward(fresh), adapted, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_kohya, adapted, rtol=1e-4, atol=1e-5)


def test_kohya_mapping_names_a_key_that_does_not_fit(tmp_path):
    from trainer.export import kohya_to_diffusers

    t, _ = _adapted(num_layers=1, num_single_layers=1)
    sd = kohya_state_dict(t, dtype=torch.float32)
    other = tiny_transformer(num_layers=1, num_single_layers=1, flux_width=True)
    with pytest.raises(ValueError, match="lora_unet_double_blocks_0_img_attn_qkv"):
        kohya_to_diffusers(sd, other)
    with pytest.raises(ValueError, match="lora_unet_single_blocks_5_linear2"):
        kohya_to_diffusers({**sd, "lora_unet_single_blocks_5_linear2.lora_down.weight": torch.zeros(4, 32)}, t)
