"""Precomputed model inputs: VAE latents and text embeddings of one sample, as one safetensors blob.

The encode job (flows/encode.py) writes them into side shards (`K.lcu.safetensors`: x0, cond, img_ids,
is_target, prompt embeddings, pooled embedding, text ids; key, task, instruction, form, max_tokens, base and
the condition settings (layout, repainting_scale, ref_scale_pad, vae_sample) in the metadata); the loader then
hands them to the trainer, which runs no encoder at all.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from schemas.config import TrainConfig
from schemas.shard_layout import decode_sample, sample_group
from trainer.components import FFT_IN_CHANNELS
from trainer.lcu import LcuInputs, build_inputs
from trainer.panels import panel_options, sample_panels

ENCODED_EXT = "lcu.safetensors"


@dataclass
class Encoded:
    inputs: LcuInputs  # batch dimension 1
    prompt_embeds: torch.Tensor  # (1, T, D)
    pooled: torch.Tensor  # (1, P)
    txt_ids: torch.Tensor  # (T, 3)


def _vae_generator(cfg: TrainConfig, key: str) -> torch.Generator | None:
    """A precomputed sample keeps one posterior draw, seeded by (seed, key)."""
    if not cfg.vae_sample:
        return None
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{cfg.seed}|vae|{key}".encode()).digest()[:8],
                                                        "big") >> 1)


@torch.no_grad()
def encode_sample_bytes(pipe, raw: dict, cfg: TrainConfig, base_name: str) -> bytes:
    sample = decode_sample(raw)
    panels = sample_panels(sample, cfg.max_tokens, cfg.form, **panel_options(cfg, sample))
    scale = cfg.repainting_scale(sample.task)
    modify = pipe.transformer.config.in_channels == FFT_IN_CHANNELS  # the released full fine-tune's layout
    inp = build_inputs(panels, cfg.form, pipe.vae, scale, _vae_generator(cfg, sample.key), modify)
    max_len = min(cfg.max_sequence_length, pipe.tokenizer_2.model_max_length)
    embeds, pooled, txt_ids = pipe.encode_prompt(prompt=[sample.instruction], prompt_2=None,
                                                 device=pipe.vae.device, max_sequence_length=max_len)
    tensors = {"x0": inp.x0[0], "cond": inp.cond[0], "img_ids": inp.img_ids, "is_target": inp.is_target.to(torch.uint8),
               "prompt_embeds": embeds[0], "pooled": pooled[0], "txt_ids": txt_ids}
    meta = {"key": sample.key, "task": sample.task, "instruction": sample.instruction, "form": cfg.form,
            "group": sample_group(sample.key, sample.lineage.source_ids),
            "max_tokens": str(cfg.max_tokens), "base": base_name, "layout": cfg.maskless_layout,
            "repainting_scale": str(scale), "ref_scale_pad": str(cfg.ref_scale_pad), "vae_sample": str(cfg.vae_sample)}
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)


def encoded_meta(data: bytes) -> dict[str, str]:
    """The metadata alone: safetensors keeps it in the JSON header after an 8-byte length."""
    with io.BytesIO(data) as f:
        header_len = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(header_len))["__metadata__"]


def decode_encoded(data: bytes) -> tuple[dict[str, str], Encoded]:
    meta = encoded_meta(data)
    t = st_load(data)
    inputs = LcuInputs(t["x0"][None], t["cond"][None], t["img_ids"], t["is_target"].bool())
    return meta, Encoded(inputs, t["prompt_embeds"][None], t["pooled"][None], t["txt_ids"])
