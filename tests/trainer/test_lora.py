import re

import pytest
import torch

from trainer.lora import (DOUBLE_TARGETS, LORA_TARGETS, SINGLE_TARGETS, TARGET_REGEX, add_lora, is_lora_target,
                          lora_config, lora_layers, lora_target_names)


def tiny_transformer(num_layers=1, num_single_layers=1, flux_width=False, seed=0):
    """FLUX.1-Fill's architecture at toy size; `flux_width` gives FLUX.1's inner width (3072, mlp 12288),
    which diffusers' kohya converter hard-codes for single blocks."""
    from diffusers import FluxTransformer2DModel

    heads = dict(attention_head_dim=128, num_attention_heads=24, axes_dims_rope=[16, 56, 56]) if flux_width else \
        dict(attention_head_dim=16, num_attention_heads=2, axes_dims_rope=[4, 6, 6])
    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=384, out_channels=64, num_layers=num_layers,
                                  num_single_layers=num_single_layers, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, **heads).eval()


def forward(transformer, seed=3, img_tokens=16, txt_tokens=8):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(img_tokens, 3)
    ids[:, 1], ids[:, 2] = torch.arange(img_tokens) // 4, torch.arange(img_tokens) % 4
    with torch.no_grad():
        return transformer(hidden_states=torch.randn(1, img_tokens, 384, generator=g),
                           encoder_hidden_states=torch.randn(1, txt_tokens, 32, generator=g),
                           pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.6]),
                           guidance=torch.tensor([1.0]), img_ids=ids, txt_ids=torch.zeros(txt_tokens, 3)).sample


def randomize_lora(transformer, seed=1, std=0.05, adapter_name="default"):
    """lora_B starts at zero (the adapter is the identity): give every A and B random values."""
    g = torch.Generator().manual_seed(seed)
    for _, layer in lora_layers(transformer, adapter_name):
        for w in (layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight):
            w.data = torch.randn(w.shape, generator=g) * std


def expected_targets(n_double, n_single):
    return {f"transformer_blocks.{i}.{s}" for i in range(n_double) for s in DOUBLE_TARGETS} | \
        {f"single_transformer_blocks.{i}.{s}" for i in range(n_single) for s in SINGLE_TARGETS}


def test_targets_are_exactly_the_recipe_layers():
    t = tiny_transformer(num_layers=2, num_single_layers=3)
    names = lora_target_names(t)
    assert set(names) == expected_targets(2, 3)
    assert sum(n.startswith("transformer_blocks.") for n in names) == 2 * 14
    assert sum(n.startswith("single_transformer_blocks.") for n in names) == 3 * 6
    linears = {n for n, m in t.named_modules() if isinstance(m, torch.nn.Linear)}
    for prefix, suffixes in LORA_TARGETS.items():  # every suffix names a real linear in every block
        assert all(f"{prefix}.{i}.{s}" in linears for s in suffixes for i in range(len(getattr(t, prefix))))
    untouched = linears - set(names)
    assert {"proj_out", "norm_out.linear", "x_embedder", "context_embedder"} <= untouched
    assert not any(n.startswith(("transformer_blocks", "single_transformer_blocks")) for n in untouched)


def test_regex_is_anchored():
    assert re.fullmatch(TARGET_REGEX, "transformer_blocks.18.attn.to_add_out")
    assert is_lora_target("single_transformer_blocks.37.proj_out")
    for name in ("proj_out", "norm_out.linear", "transformer_blocks.0.attn.to_out.1", "transformer_blocks.0.attn",
                 "single_transformer_blocks.0.attn.norm_q", "transformer_blocks.0.attn.to_q.lora_A",
                 "single_transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.norm.linear"):
        assert not is_lora_target(name), name


def test_full_size_fill_transformer_counts():
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():  # FLUX.1-Fill-dev's config, no memory
        t = FluxTransformer2DModel(in_channels=384, out_channels=64, guidance_embeds=True)
    names = lora_target_names(t)
    assert len(names) == 19 * 14 + 38 * 6
    modules = dict(t.named_modules())
    rank64 = sum(64 * (modules[n].in_features + modules[n].out_features) for n in names)
    # per double block: 8 attention linears (3072 -> 3072), 4 MLP (3072 <-> 12288), 2 modulation (3072 -> 18432);
    # per single block: q, k, v, proj_mlp (3072 -> 12288), proj_out (15360 -> 3072), modulation (3072 -> 9216)
    per_double = 8 * 6144 + 4 * 15360 + 2 * 21504
    per_single = 3 * 6144 + 15360 + 18432 + 12288
    assert rank64 == 64 * (19 * per_double + 38 * per_single) == 343_670_784  # ~687 MB in bf16


def test_config_defaults_alpha_to_rank():
    cfg = lora_config()
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.init_lora_weights) == (64, 64.0, 0.0, True)
    assert lora_config(16, 8).lora_alpha == 8.0
    with pytest.raises(ValueError):
        lora_config(0)


def test_add_lora_trains_only_the_adapter():
    t = tiny_transformer(num_layers=2, num_single_layers=2)
    base = forward(t)
    modules = dict(t.named_modules())
    expected = sum(4 * (modules[n].in_features + modules[n].out_features) for n in expected_targets(2, 2))
    assert add_lora(t, rank=4, alpha=8, fused=False) == expected
    adapted = dict(lora_layers(t))
    assert set(adapted) == expected_targets(2, 2)
    assert all(layer.scaling["default"] == 2.0 for layer in adapted.values())
    trainable = [n for n, p in t.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    assert torch.equal(forward(t), base)  # B = 0 at init: the adapter starts as the identity

    t.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(16, 3)
    out = t(hidden_states=torch.randn(1, 16, 384, generator=g),
            encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
            pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.6]),
            guidance=torch.tensor([1.0]), img_ids=ids, txt_ids=torch.zeros(8, 3)).sample
    out.square().mean().backward()
    assert all(p.grad is None for p in t.parameters() if not p.requires_grad)
    assert all(layer.lora_B["default"].weight.grad.abs().sum() > 0 for layer in adapted.values())


def test_fused_lora_has_the_released_parameter_count_and_init():
    import math

    t = tiny_transformer(num_layers=2, num_single_layers=2)
    base = forward(t)
    modules = dict(t.named_modules())
    per_part = sum(4 * (modules[n].in_features + modules[n].out_features) for n in expected_targets(2, 2))
    # released: one rank-4 LoRA per fused BFL linear: qkv (32 -> 96) twice per double block, linear1
    # (32 -> 96 + 128) per single block; a fused LoRA saves the (n - 1) extra down projections
    saved = 2 * 2 * (2 * 4 * 32) + 2 * (3 * 4 * 32)
    assert add_lora(t, rank=4) == per_part - saved
    assert torch.equal(forward(t), base)  # zero B
    for name, layer in lora_layers(t):
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        bound = 1 / math.sqrt(a.shape[1])  # kaiming_uniform(a=sqrt(5)) on [r, in]: U(-1/sqrt(in), 1/sqrt(in))
        assert a.abs().max() <= bound and a.abs().max() > 0.5 * bound, name
        assert not b.any(), name


def test_full_size_fused_count_matches_the_released_lora():
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        t = FluxTransformer2DModel(in_channels=384, out_channels=64, guidance_embeds=True)
    modules = dict(t.named_modules())
    names = lora_target_names(t)
    per_part = sum(64 * (modules[n].in_features + modules[n].out_features) for n in names)
    # BFL: per double block 2 qkv (3072 -> 9216), proj x2, mlp x4, mod x2; per single block linear1
    # (3072 -> 21504), linear2 (15360 -> 3072), modulation (3072 -> 9216)
    per_double = 2 * 12288 + 2 * 6144 + 4 * 15360 + 2 * 21504
    per_single = 24576 + 18432 + 12288
    released = 64 * (19 * per_double + 38 * per_single)
    assert per_part - 64 * 3072 * (19 * 2 * 2 + 38 * 3) == released == 306_315_264
