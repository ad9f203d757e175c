"""Exports of a LoRA-adapted FLUX.1-Fill transformer: diffusers LoRA, kohya/ComfyUI LoRA, full transformer.

Kohya / ComfyUI keys follow BFL's module tree (what the released ACE++ LoRAs use), where BFL fuses layers
that diffusers keeps separate: `img_attn.qkv` = to_q|to_k|to_v, `txt_attn.qkv` = add_q|add_k|add_v, and a
single block's `linear1` = to_q|to_k|to_v|proj_mlp (rows stacked in that order).

Every file is written so that `W + up @ down` is the exact update, with alpha = rank: the released native
merge (ACE++'s `merge_comfyui_lora`) ignores alpha, and kohya / ComfyUI / diffusers, which apply
alpha / rank, then apply 1. Each part's scale s_i (peft `scaling`, alpha / r) is folded into its up rows.

Fused parts that share lora_A (`add_lora(fused=True)`, the released parametrisation) export densely:

    down = A                                                  [r, in]
    up   = cat(s_1 B_1 .. s_n B_n)  along the output axis     [sum out_i, r]

Parts with their own A (`fused=False`) need a block-diagonal up to stay exact:

    down = cat(A_1 .. A_n)  along the rank axis               [sum r_i, in]
    up   = blockdiag(s_1 B_1 .. s_n B_n)                      [sum out_i, sum r_i]

diffusers' kohya converter (`_convert_kohya_flux_lora_to_diffusers`) splits a dense up into the parts with
the down copied to each, and a block-diagonal one back into the original per-part LoRAs. It splits
`linear1` rows with FLUX.1's fixed widths (3072, 3072, 3072, 12288), so diffusers can load a kohya file
only for transformers of FLUX.1's width; ComfyUI slices by the model's own shapes, and so does
`kohya_to_diffusers` here (what `aceforge infer --lora <kohya file>` uses, for any width). BFL `img_mod.lin` /
`txt_mod.lin` / `modulation.lin` share diffusers' output order (shift, scale, gate, ...) for norm1 /
norm1_context / norm.linear: no swap there (the converter swaps halves for `final_layer` only, which the
recipe does not adapt). Files are bf16 by default (the training precision; half of fp32).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from trainer.lora import DOUBLE_PREFIX, SINGLE_PREFIX, lora_delta, lora_layers

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
# Metadata key of our kohya files: the input channels of the base they were trained on (384 or 448). Files
# without it (the released ones) were trained on FLUX.1-Fill's 384.
IN_CHANNELS_META = "aceforge_in_channels"

# kohya module suffix -> diffusers module suffixes, fused in this order (rows of the BFL weight).
KOHYA_DOUBLE: dict[str, tuple[str, ...]] = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "txt_mod_lin": ("norm1_context.linear",),
}
KOHYA_SINGLE: dict[str, tuple[str, ...]] = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}


def _peft_metadata(transformer, adapter_name: str) -> dict:
    cfg = transformer.peft_config[adapter_name].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}


def export_diffusers_lora(transformer, out_dir: str | Path, adapter_name: str = "default") -> Path:
    """`out_dir/pytorch_lora_weights.safetensors`, loadable with `FluxFillPipeline.load_lora_weights(out_dir)`.

    The peft config (rank, alpha) travels in the file's metadata, so alpha != rank loads with its scale.
    """
    from diffusers import FluxFillPipeline
    from peft import get_peft_model_state_dict

    out_dir = Path(out_dir)
    layers = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    layers = {k: v.detach().clone().contiguous() for k, v in layers.items()}  # a tied lora_A: one copy per part
    FluxFillPipeline.save_lora_weights(out_dir, transformer_lora_layers=layers, weight_name=DIFFUSERS_LORA_FILE,
                                       transformer_lora_adapter_metadata=_peft_metadata(transformer, adapter_name))
    return out_dir / DIFFUSERS_LORA_FILE


def _fuse(parts: list[tuple[torch.nn.Module | None, torch.nn.Module]], adapter_name: str):
    """(down, up) of one fused kohya module from its diffusers parts (lora layer or None, base linear), with
    each part's scale folded into its up rows: up @ down is the module's whole update."""
    adapted = [lora for lora, _ in parts if lora is not None]
    downs = [lora.lora_A[adapter_name].weight.detach() for lora in adapted]
    ref = downs[0]
    shared = len(adapted) == len(parts) and all(d is ref or torch.equal(d, ref) for d in downs[1:])
    ups = []
    for lora, base in parts:
        if lora is None:  # part not adapted: zero rows in up, no rank
            ups.append(torch.zeros(base.out_features, 0, dtype=torch.float32, device=ref.device))
        else:
            ups.append(lora.lora_B[adapter_name].weight.detach().float() * lora.scaling[adapter_name])
    if shared:
        return ref.float(), torch.cat(ups, dim=0)
    return torch.cat(downs, dim=0).float(), torch.block_diag(*ups)


def kohya_state_dict(transformer, adapter_name: str = "default",
                     dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The kohya-format tensors of `adapter_name` (alpha = rank, scales folded into up; see the module
    docstring) in `dtype`; raises if an adapted layer has no kohya name."""
    adapted = dict(lora_layers(transformer, adapter_name))
    modules = dict(transformer.named_modules())
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for prefix, table, bfl in ((DOUBLE_PREFIX, KOHYA_DOUBLE, "double_blocks"),
                               (SINGLE_PREFIX, KOHYA_SINGLE, "single_blocks")):
        for i in range(len(getattr(transformer, prefix))):
            for kohya, suffixes in table.items():
                names = [f"{prefix}.{i}.{s}" for s in suffixes]
                if not any(n in adapted for n in names):
                    continue
                parts = [(adapted.get(n), modules[n].get_base_layer() if n in adapted else modules[n])
                         for n in names]
                down, up = _fuse(parts, adapter_name)
                key = f"lora_unet_{bfl}_{i}_{kohya}"
                out[f"{key}.lora_down.weight"] = down.to(dtype)
                out[f"{key}.lora_up.weight"] = up.to(dtype)
                out[f"{key}.alpha"] = torch.tensor(float(down.shape[0]), dtype=dtype)
                used.update(n for n in names if n in adapted)
    missing = sorted(set(adapted) - used)
    if missing:
        raise ValueError(f"adapted layers without a kohya name: {missing[:5]}")
    return out


def export_kohya_lora(transformer, out_path: str | Path, adapter_name: str = "default",
                      dtype: torch.dtype = torch.bfloat16) -> Path:
    """One safetensors file with kohya / ComfyUI keys (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`)."""
    from safetensors.torch import save_file

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in kohya_state_dict(transformer, adapter_name, dtype).items()}
    tmp = out_path.with_name(out_path.name + ".tmp")
    meta = {"format": "pt", "ss_network_module": "networks.lora_flux"}
    if getattr(transformer.config, "in_channels", None):
        meta[IN_CHANNELS_META] = str(transformer.config.in_channels)
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out_path)
    return out_path


_KOHYA_KEY = re.compile(r"lora_unet_(double|single)_blocks_(\d+)_(\w+?)\.(lora_down\.weight|lora_up\.weight|alpha)")


def kohya_stem(key: str) -> tuple[str, str] | None:
    """A kohya block key -> (its module stem, its part: lora_down.weight / lora_up.weight / alpha); None for
    any other key."""
    m = _KOHYA_KEY.fullmatch(key)
    return (key[:m.start(4) - 1], m.group(4)) if m else None


def kohya_modules(stem: str) -> tuple[str, list[str], str] | None:
    """A kohya stem -> (diffusers block prefix, the diffusers modules it fuses, the kohya module name); None
    when it names no module of KOHYA_DOUBLE / KOHYA_SINGLE."""
    m = _KOHYA_KEY.fullmatch(stem + ".alpha")
    if m is None:
        return None
    kind, idx, name, _ = m.groups()
    prefix, table = (DOUBLE_PREFIX, KOHYA_DOUBLE) if kind == "double" else (SINGLE_PREFIX, KOHYA_SINGLE)
    return (prefix, [f"{prefix}.{idx}.{s}" for s in table[name]], name) if name in table else None


def is_kohya_state_dict(keys) -> bool:
    """Every key one of the block-module keys this module writes (`lora_unet_{double|single}_blocks_...`)."""
    keys = list(keys)
    return bool(keys) and all(_KOHYA_KEY.fullmatch(k) for k in keys)


def kohya_to_diffusers(state_dict: dict[str, torch.Tensor], transformer) -> dict[str, torch.Tensor]:
    """The inverse of `kohya_state_dict` for `transformer`'s own widths: diffusers keys
    (`transformer.<module>.lora_A.weight` / `lora_B.weight`), loadable with `load_lora_weights(dict)`.

    A fused module's up rows are split by the parts' `out_features` (diffusers' converter assumes FLUX.1's);
    each part gets the whole down, so dense and block-diagonal ups both stay exact, and kohya's alpha / rank is
    folded into the up: the loaded adapter has scale 1 (diffusers' default alpha = rank). A key that names no
    module of `transformer`, or whose shapes do not fit it, raises ValueError naming the key.
    """
    modules = dict(transformer.named_modules())
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        split = kohya_stem(key)
        if split is None:
            raise ValueError(f"{key}: not a kohya FLUX block key this mapping knows")
        groups.setdefault(split[0], {})[split[1]] = value
    out: dict[str, torch.Tensor] = {}
    for stem, parts in groups.items():
        kind, idx, name, _ = _KOHYA_KEY.fullmatch(stem + ".alpha").groups()
        prefix, table = (DOUBLE_PREFIX, KOHYA_DOUBLE) if kind == "double" else (SINGLE_PREFIX, KOHYA_SINGLE)
        names = [f"{prefix}.{idx}.{s}" for s in table.get(name, ())]
        if not names or any(n not in modules for n in names):
            raise ValueError(f"{stem}: no such module in this transformer ({len(getattr(transformer, prefix))} "
                             f"{kind} blocks; kohya names {sorted(table)})")
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise ValueError(f"{stem}: needs both lora_down.weight and lora_up.weight")
        down, up = parts["lora_down.weight"].float(), parts["lora_up.weight"].float()
        rank = down.shape[0]
        if "alpha" in parts:
            up = up * (float(parts["alpha"]) / rank)
        bases = [modules[n].get_base_layer() if hasattr(modules[n], "get_base_layer") else modules[n] for n in names]
        widths = [b.out_features for b in bases]
        if up.shape != (sum(widths), rank) or any(down.shape[1] != b.in_features for b in bases):
            raise ValueError(f"{stem}: up {tuple(up.shape)} / down {tuple(down.shape)} do not fit this "
                             f"transformer's {'|'.join(table[name])} ({widths} x {bases[0].in_features})")
        for n, rows in zip(names, torch.split(up, widths)):
            out[f"transformer.{n}.lora_A.weight"] = down.clone()
            out[f"transformer.{n}.lora_B.weight"] = rows.contiguous()
    return out


def merged_state_dict(transformer, adapter_name: str | None = "default") -> dict[str, torch.Tensor]:
    """Plain diffusers keys with the adapter (if any) folded into the base weights; nothing is mutated."""
    from peft.tuners.lora import LoraLayer

    has_adapter = any(isinstance(m, LoraLayer) for m in transformer.modules())
    deltas = dict(lora_layers(transformer, adapter_name)) if has_adapter and adapter_name else {}
    out: dict[str, torch.Tensor] = {}
    for key, value in transformer.state_dict().items():
        if ".lora_" in key:  # peft's lora_A / lora_B (FLUX base names never contain ".lora_")
            continue
        plain = key.replace(".base_layer.", ".")
        module = plain.rsplit(".", 1)[0]
        if plain.endswith(".weight") and module in deltas:
            value = (value.float() + lora_delta(deltas[module], adapter_name)).to(value.dtype)
        out[plain] = value.detach()
    return out


def export_full(transformer, out_dir: str | Path, adapter_name: str | None = "default") -> Path:
    """A diffusers transformer folder (config + safetensors, sharded past 10 GB) with the LoRA merged in,
    loadable with `FluxTransformer2DModel.from_pretrained(out_dir)`."""
    from accelerate import init_empty_weights

    out_dir = Path(out_dir)
    state = merged_state_dict(transformer, adapter_name)
    with init_empty_weights():
        plain = type(transformer).from_config(transformer.config)
    plain.load_state_dict(state, strict=True, assign=True)  # shares storage with `state`: no copy
    plain.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
