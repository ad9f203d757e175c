"""Size of the kohya/ComfyUI LoRA export at FLUX.1's width, rank 64, projected to the whole model.

One double block and one single block of FLUX.1's width are built and exported; the full model has 19 and 38.
Formats: per-part LoRAs with a block-diagonal up in fp32 (the earlier export) against shared-A fused LoRAs
(the released parametrisation) in bf16 (the default now).

    python bench/kohya_export_size.py
"""

from __future__ import annotations

import os
import tempfile

import torch


def _transformer(double: int, single: int):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(in_channels=384, out_channels=64, num_layers=double, num_single_layers=single,
                                  guidance_embeds=True)


def _size(double: int, single: int, fused: bool, dtype: torch.dtype) -> int:
    from trainer.export import export_kohya_lora
    from trainer.lora import add_lora

    t = _transformer(double, single)
    add_lora(t, rank=64, fused=fused)
    with torch.no_grad():
        for n, p in t.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.01)
    with tempfile.TemporaryDirectory() as d:
        return os.path.getsize(export_kohya_lora(t, os.path.join(d, "lora.safetensors"), dtype=dtype))


def main() -> None:
    for label, fused, dtype in (("per-part A, block-diagonal up, fp32", False, torch.float32),
                                ("per-part A, block-diagonal up, bf16", False, torch.bfloat16),
                                ("shared A (released), dense up, bf16", True, torch.bfloat16)):
        d, s = _size(1, 0, fused, dtype), _size(0, 1, fused, dtype)
        print(f"{label}: double block {d / 1e6:.1f} MB, single block {s / 1e6:.1f} MB, "
              f"FLUX.1 (19 + 38 blocks) {(19 * d + 38 * s) / 1e9:.3f} GB")


if __name__ == "__main__":
    main()
