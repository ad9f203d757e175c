"""Starting a run from a released ACE++ LoRA file (kohya / ComfyUI keys), mapped exactly onto the trainer's LoRA.

The released LoRAs (`comfyui_subject_lora16.safetensors`, `comfyui_local_lora16.safetensors`,
`comfyui_portrait_lora64.safetensors`) hold, per adapted BFL linear, `lora_unet_<block>_<i>_<module>` with
`.lora_down.weight` [r, in], `.lora_up.weight` [out, r] and `.alpha`; kohya / ComfyUI / diffusers apply
`W + alpha / r * up @ down`. A fused BFL linear (`img_attn_qkv`, `txt_attn_qkv`, a single block's `linear1`)
has ONE down and an up whose rows stack the diffusers parts (trainer/export.py KOHYA_DOUBLE / KOHYA_SINGLE).

That is exactly the trainer's fused parametrisation (`lora.add_lora(fused=True)`): one lora_A shared by the
parts, each part's lora_B its rows of up, peft scaling alpha / r. So the run gets an adapter on exactly the
file's modules, each with the file's rank and alpha (peft rank_pattern / alpha_pattern where they differ),
A = down and B = the up rows: the adapted transformer computes what the file's merge computes, and the
kohya export of the run has the file's key set and ranks (alpha is written as rank, its scale folded into up).

Checks, each a one-line ValueError naming the key: a key that is not a kohya FLUX block key, a module the
base does not have, a missing down or up, shapes that do not fit the base (another width, another rank in
down and up), and a file written for another input layout than the base's (the released LoRAs were trained
on FLUX.1-Fill's 384 channels; this project's kohya exports record their base's in the metadata). The
checks need the base's config only (a meta-device transformer), so they run before Ray or anything starts.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from schemas import io as storage
from trainer.components import FILL_IN_CHANNELS, empty_transformer
from trainer.export import KOHYA_DOUBLE, KOHYA_SINGLE, IN_CHANNELS_META, kohya_modules, kohya_stem
from trainer.lora import AdapterLayout

SUFFIX = ".safetensors"


@dataclass
class LoraFile:
    """A kohya-format LoRA file, grouped by module stem (`lora_unet_double_blocks_0_img_attn_qkv`)."""

    uri: str
    sha256: str
    stems: dict[str, dict[str, torch.Tensor]]  # stem -> {"lora_down.weight", "lora_up.weight", "alpha"}
    in_channels: int  # the input layout of the base it was trained on (metadata; released files: 384)

    def identity(self) -> dict:
        """Content, not location (a run's identity)."""
        return {"lora_file_sha256": self.sha256, "modules": len(self.stems)}

    def ranks(self) -> list[int]:
        return sorted({int(p["lora_down.weight"].shape[0]) for p in self.stems.values()})


def is_lora_file(uri: str) -> bool:
    """`init_from` names a single .safetensors file (a LoRA), not a checkpoint or run folder."""
    fs, path = storage.fs_path(uri)
    return uri.rstrip("/").endswith(SUFFIX) and fs.isfile(path)


def _metadata(data: bytes) -> dict[str, str]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


def read_lora_file(uri: str) -> LoraFile:
    """Read and group a kohya LoRA file; a key this mapping does not know is refused, naming it."""
    from safetensors.torch import load

    fs, path = storage.fs_path(uri)
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        meta, tensors = _metadata(data), load(data)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line
        raise ValueError(f"init_from {uri} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if not tensors:
        raise ValueError(f"init_from {uri} holds no tensors")
    stems: dict[str, dict[str, torch.Tensor]] = {}
    for key in sorted(tensors):
        split = kohya_stem(key)
        if split is None:
            raise ValueError(f"init_from {uri}: {key} is not a kohya FLUX block key "
                             f"(lora_unet_{{double|single}}_blocks_<i>_<module>.lora_down.weight / .lora_up.weight / "
                             f".alpha): it maps to no LoRA module of the trainer")
        stems.setdefault(split[0], {})[split[1]] = tensors[key]
    for stem, parts in stems.items():
        if module_names(stem) is None:
            raise ValueError(f"init_from {uri}: {stem}.{sorted(parts)[0]} names no module the trainer adapts "
                             f"(kohya names {sorted(KOHYA_DOUBLE)} in double blocks, {sorted(KOHYA_SINGLE)} in "
                             f"single blocks)")
        for need in ("lora_down.weight", "lora_up.weight"):
            if need not in parts:
                raise ValueError(f"init_from {uri}: {stem} has no {need}")
    in_channels = int(meta.get(IN_CHANNELS_META) or FILL_IN_CHANNELS)
    return LoraFile(uri, hashlib.sha256(data).hexdigest(), stems, in_channels)


module_names = kohya_modules  # kohya stem -> (diffusers block prefix, its diffusers modules, kohya name)


def adapter_layout(lora: LoraFile, transformer, in_channels: int | None = None) -> tuple[AdapterLayout, dict]:
    """The adapter the file needs on `transformer` (a real or meta-device one) and, per stem, its diffusers
    module names; ValueError naming the first key that does not fit."""
    where = f"init_from {lora.uri}"
    in_channels = in_channels if in_channels is not None else transformer.config.in_channels
    if lora.in_channels != in_channels:
        raise ValueError(f"{where} was trained on a {lora.in_channels}-channel base, this base takes {in_channels} "
                         f"input channels (384: FLUX.1-Fill, what the released LoRAs use; 448: the released full "
                         f"fine-tune): use the base it was trained on")
    modules = dict(transformer.named_modules())
    layout: dict[str, tuple[int, float]] = {}
    names_of: dict[str, list[str]] = {}
    for stem, parts in sorted(lora.stems.items()):
        mapped = module_names(stem)
        if mapped is None:
            raise ValueError(f"{where}: {stem}.lora_down.weight names no module the trainer adapts (kohya names "
                             f"{sorted(KOHYA_DOUBLE)} in double blocks, {sorted(KOHYA_SINGLE)} in single blocks)")
        prefix, names, _ = mapped
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{where}: {stem}.lora_down.weight maps to {missing[0]}, which this base does not have "
                             f"({len(getattr(transformer, prefix, ()))} {prefix})")
        bases = [modules[n].get_base_layer() if hasattr(modules[n], "get_base_layer") else modules[n] for n in names]
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        rank = int(down.shape[0])
        widths = [b.out_features for b in bases]
        if down.ndim != 2 or down.shape[1] != bases[0].in_features:
            raise ValueError(f"{where}: {stem}.lora_down.weight is {tuple(down.shape)}, this base's {names[0]} takes "
                             f"{bases[0].in_features} input features (a LoRA for another base)")
        if tuple(up.shape) != (sum(widths), rank):
            raise ValueError(f"{where}: {stem}.lora_up.weight is {tuple(up.shape)}, expected {(sum(widths), rank)} "
                             f"(rank {rank} from lora_down; this base's {'|'.join(names)} give {sum(widths)} rows)")
        alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)  # kohya: no alpha means alpha = rank
        if not alpha > 0:
            raise ValueError(f"{where}: {stem}.alpha is {alpha}; it must be positive")
        for n in names:
            layout[n] = (rank, alpha)
        names_of[stem] = names
    return AdapterLayout(layout), names_of


def check_lora_file(lora: LoraFile, base_config: dict) -> AdapterLayout:
    """adapter_layout against a base's transformer config alone (no weights loaded)."""
    return adapter_layout(lora, empty_transformer(base_config), base_config["in_channels"])[0]


@torch.no_grad()
def load_lora_file(transformer, lora: LoraFile, adapter_name: str = "default") -> int:
    """Copy the file into the adapter that `adapter_layout` planned (added with `add_lora(layout=...)`):
    lora_A = down (shared by a fused module's parts), lora_B = each part's rows of up; peft's scaling is then
    the file's alpha / rank. Returns the modules written."""
    _, names_of = adapter_layout(lora, transformer)
    modules = dict(transformer.named_modules())
    for stem, names in names_of.items():
        down, up = lora.stems[stem]["lora_down.weight"], lora.stems[stem]["lora_up.weight"]
        alpha = float(lora.stems[stem]["alpha"]) if "alpha" in lora.stems[stem] else float(down.shape[0])
        widths = [modules[n].get_base_layer().out_features for n in names]
        for n, rows in zip(names, torch.split(up, widths)):
            layer = modules[n]
            if adapter_name not in getattr(layer, "lora_A", {}):
                raise ValueError(f"{n} carries no adapter {adapter_name!r}: add it with the file's layout first")
            a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            if tuple(a.shape) != tuple(down.shape) or tuple(b.shape) != tuple(rows.shape):
                raise ValueError(f"{stem}: the adapter on {n} is {tuple(b.shape)} x {tuple(a.shape)}, the file "
                                 f"{tuple(rows.shape)} x {tuple(down.shape)}")
            a.copy_(down.to(a.device, a.dtype))
            b.copy_(rows.to(b.device, b.dtype))
            scale = layer.scaling[adapter_name]
            if abs(scale - alpha / down.shape[0]) > 1e-9 * max(1.0, abs(scale)):
                raise ValueError(f"{n}: peft scaling {scale} is not the file's alpha / rank "
                                 f"{alpha} / {down.shape[0]}")
    return len(names_of)


# --- the released full fine-tune (BFL keys) as a diffusers base folder -----------------------------------------

BFL_PREFIX = "model.diffusion_model."  # some BFL checkpoints nest their keys under it


def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    """BFL's final adaLN emits (shift, scale); diffusers' AdaLayerNormContinuous (scale, shift)."""
    a, b = w.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def bfl_to_diffusers(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """BFL FLUX transformer keys -> diffusers FluxTransformer2DModel keys, for `config`'s width (diffusers' own
    converter fixes FLUX.1's 3,072). Every BFL key must be used: a left-over key raises, naming it."""
    sd = {k[len(BFL_PREFIX):] if k.startswith(BFL_PREFIX) else k: v for k, v in sd.items()}
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(bfl: str, diff: str, fn=None) -> None:
        for p in ("weight", "bias"):
            key = f"{bfl}.{p}"
            if key in sd:
                out[f"{diff}.{p}"] = fn(sd[key]) if fn else sd[key]
                used.add(key)

    def scale(bfl: str, diff: str) -> None:
        out[f"{diff}.weight"] = sd[f"{bfl}.scale"]
        used.add(f"{bfl}.scale")

    def split(bfl: str, diffs: list[str], sizes: list[int]) -> None:
        for p in ("weight", "bias"):
            key = f"{bfl}.{p}"
            if key in sd:
                for d, part in zip(diffs, torch.split(sd[key], sizes, dim=0)):
                    out[f"{d}.{p}"] = part.clone()
                used.add(key)

    for bfl, diff in (("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
                      ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
                      ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
                      ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
                      ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                      ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
                      ("txt_in", "context_embedder"), ("img_in", "x_embedder"), ("final_layer.linear", "proj_out")):
        take(bfl, diff)
    take("final_layer.adaLN_modulation.1", "norm_out.linear", _swap_halves)
    for i in range(config["num_layers"]):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        take(f"{b}.img_mod.lin", f"{d}.norm1.linear")
        take(f"{b}.txt_mod.lin", f"{d}.norm1_context.linear")
        split(f"{b}.img_attn.qkv", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"], [inner] * 3)
        split(f"{b}.txt_attn.qkv", [f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"],
              [inner] * 3)
        scale(f"{b}.img_attn.norm.query_norm", f"{d}.attn.norm_q")
        scale(f"{b}.img_attn.norm.key_norm", f"{d}.attn.norm_k")
        scale(f"{b}.txt_attn.norm.query_norm", f"{d}.attn.norm_added_q")
        scale(f"{b}.txt_attn.norm.key_norm", f"{d}.attn.norm_added_k")
        take(f"{b}.img_attn.proj", f"{d}.attn.to_out.0")
        take(f"{b}.txt_attn.proj", f"{d}.attn.to_add_out")
        for j in ("0", "2"):
            take(f"{b}.img_mlp.{j}", f"{d}.ff.net.{j}{'.proj' if j == '0' else ''}")
            take(f"{b}.txt_mlp.{j}", f"{d}.ff_context.net.{j}{'.proj' if j == '0' else ''}")
    for i in range(config["num_single_layers"]):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        take(f"{b}.modulation.lin", f"{d}.norm.linear")
        split(f"{b}.linear1", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"],
              [inner] * 3 + [sd[f"{b}.linear1.weight"].shape[0] - 3 * inner] if f"{b}.linear1.weight" in sd else [])
        scale(f"{b}.norm.query_norm", f"{d}.attn.norm_q")
        scale(f"{b}.norm.key_norm", f"{d}.attn.norm_k")
        take(f"{b}.linear2", f"{d}.proj_out")
    left = sorted(set(sd) - used)
    if left:
        raise ValueError(f"{left[0]}: a BFL key this conversion does not place ({len(left)} left over)")
    return out


def bfl_config(sd: dict[str, torch.Tensor], like: dict) -> dict:
    """The diffusers config of a BFL checkpoint: `like` (the FLUX.1-Fill transformer's config) with the
    checkpoint's input channels and block counts."""
    sd = {k[len(BFL_PREFIX):] if k.startswith(BFL_PREFIX) else k: v for k, v in sd.items()}
    if "img_in.weight" not in sd:
        raise ValueError("img_in.weight missing: not a BFL FLUX transformer checkpoint")
    blocks = lambda kind: 1 + max((int(k.split(".")[1]) for k in sd if k.startswith(f"{kind}.")), default=-1)  # noqa: E731
    return {**{k: v for k, v in like.items() if not k.startswith("_")}, "in_channels": int(sd["img_in.weight"].shape[1]),
            "num_layers": blocks("double_blocks"), "num_single_layers": blocks("single_blocks")}


def fft_base(fill_folder: str | Path, fft_file: str | Path, out_folder: str | Path, link: bool = True) -> Path:
    """A diffusers base folder for the released full fine-tune: FLUX.1-Fill-dev's folder (`fill_folder`) with
    its transformer replaced by `fft_file` (BFL keys, x_embedder of 448 inputs) converted. The other parts
    are linked (`link`, default: no copy of the 10 GB of text encoders) or copied. Refused in one line: a file
    whose input is not 448 channels, or whose widths do not fit FLUX.1-Fill's config."""
    import shutil

    from accelerate import init_empty_weights
    from diffusers import FluxFillPipeline, FluxTransformer2DModel
    from safetensors.torch import load_file

    from trainer.components import FFT_IN_CHANNELS, PIPELINE_PARTS, transformer_config

    fill_folder, out_folder = Path(fill_folder), Path(out_folder)
    like = transformer_config(fill_folder)
    sd = load_file(str(fft_file))
    config = bfl_config(sd, like)
    if config["in_channels"] != FFT_IN_CHANNELS:
        raise ValueError(f"{fft_file}: img_in takes {config['in_channels']} input channels, the released full "
                         f"fine-tune {FFT_IN_CHANNELS}")
    converted = bfl_to_diffusers(sd, config)
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(config)
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as e:  # shapes or keys that do not fit the config: the first line names them
        raise ValueError(f"{fft_file} does not fit FLUX.1-Fill's transformer config: "
                         f"{' '.join(str(e).split())[:300]}") from None
    if out_folder.exists():
        raise ValueError(f"{out_folder} exists: give a new folder")
    out_folder.mkdir(parents=True)
    model.save_pretrained(out_folder / "transformer", safe_serialization=True)
    for part in [p for p in PIPELINE_PARTS if p != "transformer"] + [FluxFillPipeline.config_name]:
        src = (fill_folder / part).resolve()
        if link:
            (out_folder / part).symlink_to(src, target_is_directory=src.is_dir())
        elif src.is_dir():
            shutil.copytree(src, out_folder / part)
        else:
            shutil.copy2(src, out_folder / part)
    return out_folder


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.released fft-base FILL_DIR FFT_FILE OUT_DIR [--copy]`."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (4, 5) or args[0] != "fft-base" or (len(args) == 5 and args[4] != "--copy"):
        print("usage: python -m trainer.released fft-base FLUX.1-Fill-dev-folder ace_plus_fft.safetensors OUT [--copy]")
        return 2
    try:
        out = fft_base(args[1], args[2], args[3], link=len(args) == 4)
    except (ValueError, FileNotFoundError) as e:
        print(f"fft-base failed: {e}")
        return 1
    print(f"wrote {out} (train.base: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
