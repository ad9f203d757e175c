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

import torch

from schemas import io as storage
from trainer.components import FILL_IN_CHANNELS, empty_transformer
from trainer.export import KOHYA_DOUBLE, KOHYA_SINGLE, KOHYA_STEM, IN_CHANNELS_META
from trainer.lora import DOUBLE_PREFIX, SINGLE_PREFIX, AdapterLayout

SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ReleasedFile:
    """One published ACE++ weight file, as its authors name it (data for a model fetcher; nothing here
    downloads). Source: the ali-vilab/ACE_plus README (commit f3e410b8, 2025-04-21), its scepter paths
    `hf://ali-vilab/ACE_Plus@<path>` and `ms://iic/ACE_Plus@<path>`."""

    name: str
    path: str  # inside the model repositories below
    kind: str  # "lora" (kohya / ComfyUI keys: init_from) or "full" (BFL keys, 448 input channels)
    rank: int | None
    in_channels: int  # the base layout it belongs to
    sha256: str | None = None  # None: no published digest was read here; pin it from the Hub's file page
    hf_repo: str = "ali-vilab/ACE_Plus"
    modelscope_repo: str = "iic/ACE_Plus"
    licence: str = ("no licence file in ali-vilab/ACE_plus; its README: \"ACE++ is a post-training model based on "
                    "the FLUX.1-dev series from black-forest-labs. Please adhere to its open-source license.\"")


RELEASED_ACE_PLUS: tuple[ReleasedFile, ...] = (
    ReleasedFile("ace-plus-subject-lora", "subject/comfyui_subject_lora16.safetensors", "lora", 16, 384),
    ReleasedFile("ace-plus-portrait-lora", "portrait/comfyui_portrait_lora64.safetensors", "lora", 64, 384),
    ReleasedFile("ace-plus-local-editing-lora", "local_editing/comfyui_local_lora16.safetensors", "lora", 16, 384),
    # the README's spelling (ACE_PLUS_FFT_MODEL), double extension included
    ReleasedFile("ace-plus-fft", "ace_plus_fft.safetensors.safetensors", "full", None, 448),
)


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
        m = KOHYA_STEM.fullmatch(key)
        if m is None:
            raise ValueError(f"init_from {uri}: {key} is not a kohya FLUX block key "
                             f"(lora_unet_{{double|single}}_blocks_<i>_<module>.lora_down.weight / .lora_up.weight / "
                             f".alpha): it maps to no LoRA module of the trainer")
        stems.setdefault(m.group(1), {})[m.group(2)] = tensors[key]
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


def module_names(stem: str) -> tuple[str, list[str], str] | None:
    """kohya stem -> (diffusers block prefix, the diffusers module names it fuses, the kohya module name)."""
    parts = stem.split("_")  # lora unet {double|single} blocks <i> <module...>
    if len(parts) < 6 or parts[:2] != ["lora", "unet"] or parts[3] != "blocks" or not parts[4].isdigit():
        return None
    kind, idx, name = parts[2], parts[4], "_".join(parts[5:])
    table = {"double": KOHYA_DOUBLE, "single": KOHYA_SINGLE}.get(kind)
    if table is None or name not in table:
        return None
    prefix = DOUBLE_PREFIX if kind == "double" else SINGLE_PREFIX
    return prefix, [f"{prefix}.{idx}.{s}" for s in table[name]], name


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
