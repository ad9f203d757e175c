"""ACE++ inference on FLUX.1-Fill: the canvas layout of the released LoRAs, then one FluxFillPipeline call.

Canvas: the reference (if any) resized to the edit image's height sits left of the edit image; the mask is 0
over the reference and the edit mask over the edit part (mask 1 = generate). The condition is
`image * (1 - mask * repainting_scale)` in [-1, 1] (ACE++'s `repainting_scale`: 1 repaints the masked region
from scratch, 0 keeps the original pixels there as a hint). An edit mask with no pixel above 128 counts as
all-ones, as in ACE++. A mask-less edit stays in place under a full mask (released layout; its default scale
0.5 keeps the source at half strength), except at scale 1, which would blank it: then it goes left as
context, as training does (trainer/panels.py). No edit image: a blank canvas of the size asked for under a
full mask (text-to-image, or reference generation with a reference).

Sizing, as released: the whole canvas is scaled down (never up) to at most `max_tokens` 16x16-pixel tokens
(4,096 by default), then each part's width and the height are floored to multiples of 16 separately, so the
edit part's box is exact (the released code crops `slice_w + 30` instead).

FluxFillPipeline builds its condition as `image * (1 - mask)`, which erases the hint of repainting_scale < 1,
so the condition latents are prepared here (`prepare_mask_latents`, as ACE++'s diffusers inference does) and
passed as `masked_image_latents` with explicit initial `latents`.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from schemas.taxonomy import default_repainting_scale
from trainer.components import FFT_IN_CHANNELS, check_in_channels

MULTIPLE = 16  # VAE factor 8 x 2x2 packing: canvas sides must be multiples of 16
MAX_TOKENS = 4096  # released inference budget (MAX_SEQ_LEN)


def _floor16(x: float) -> int:
    return max(MULTIPLE, int(x) // MULTIPLE * MULTIPLE)  # never 0: a side under 16 px rounds up to 16


def _layout(edit_image: Image.Image | None, edit_mask: Image.Image | None, refs: list[Image.Image],
            max_tokens: int, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]:
    """Unblended canvas (RGB), mask in {0, 1} as float32 [H, W], and the edit part's box (l, t, r, b).
    `size` (w, h): the blank edit part when there is no edit image."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    edit = edit_image.convert("RGB") if edit_image is not None else None
    ew, eh = edit.size if edit is not None else size
    if edit is None or edit_mask is None:
        mask = np.ones((eh, ew), dtype=bool)
    else:
        if edit_mask.size != edit.size:
            raise ValueError(f"edit_mask is {edit_mask.size}, edit_image is {edit.size}: they must match")
        mask = np.asarray(edit_mask.convert("L")) > 128
        if not mask.any():
            mask[:] = True
    refs = [r.convert("RGB") for r in refs]
    ref_ws = [r.width * eh / r.height for r in refs]  # at the edit image's height
    scale = min(1.0, math.sqrt(max_tokens * MULTIPLE**2 / (eh * (sum(ref_ws) + ew))))
    h, w_edit = _floor16(eh * scale), _floor16(ew * scale)
    ws = [_floor16(w * scale) for w in ref_ws]
    w_ref = sum(ws)
    canvas = Image.new("RGB", (w_ref + w_edit, h))
    full = np.zeros((h, w_ref + w_edit), dtype=np.float32)
    x = 0
    for r, w in zip(refs, ws):
        canvas.paste(r.resize((w, h), Image.BICUBIC), (x, 0))
        x += w
    if edit is not None:
        canvas.paste(edit.resize((w_edit, h), Image.BICUBIC), (w_ref, 0))
    edit_mask01 = Image.fromarray(mask.astype(np.uint8) * 255).resize((w_edit, h), Image.NEAREST)
    full[:, w_ref:] = np.asarray(edit_mask01) > 127
    return canvas, full, (w_ref, 0, w_ref + w_edit, h)


def _condition(canvas: Image.Image, mask: np.ndarray, repainting_scale: float) -> torch.Tensor:
    """[3, H, W] in [-1, 1]: `image * (1 - mask * repainting_scale)`."""
    if not 0.0 <= repainting_scale <= 1.0:
        raise ValueError(f"repainting_scale must lie in [0, 1], got {repainting_scale}")
    x = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0)
    x = rearrange(x, "h w c -> c h w")
    return x * (1.0 - torch.from_numpy(mask)[None] * repainting_scale)


def resolve(edit_image: Image.Image | None, edit_mask: Image.Image | None, ref_image: Image.Image | None,
            repainting_scale: float | None = None, task: str | None = None, layout: str = "in_place"):
    """(edit image or None, edit mask, context images, scale) as the canvas will hold them.

    The scale: given, else the task's released default, else 1.0 for a masked edit and 0.5 for a mask-less
    one. A mask-less edit image becomes context under layout `panel`, or at scale 1 (it would be blanked).
    """
    if layout not in ("in_place", "panel"):
        raise ValueError(f"unknown layout {layout!r}; use in_place or panel")
    if repainting_scale is None:
        repainting_scale = default_repainting_scale(task) if task else (1.0 if edit_mask is not None else 0.5)
    refs = [ref_image] if ref_image is not None else []
    if edit_image is None:  # blank canvas: nothing to keep under the full mask
        return None, None, refs, 1.0
    if edit_mask is None and (layout == "panel" or repainting_scale >= 1.0):
        return None, None, refs + [edit_image], 1.0
    return edit_image, edit_mask, refs, repainting_scale


def ace_canvas(edit_image: Image.Image | None, edit_mask: Image.Image | None = None,
               ref_image: Image.Image | None = None, repainting_scale: float = 1.0, max_tokens: int = MAX_TOKENS,
               size: tuple[int, int] = (1024, 1024)):
    """(condition canvas PIL RGB, mask PIL L in {0, 255}, box of the edit part) for ACE++.

    The canvas is scaled down to at most `max_tokens` tokens, then each part's width and the height are rounded
    down to multiples of 16 separately, so the box edges are exact. No edit image: a blank part of `size`.
    """
    canvas, mask, box = _layout(edit_image, edit_mask, [ref_image] if ref_image is not None else [], max_tokens,
                                size)
    cond = _condition(canvas, mask, repainting_scale if edit_image is not None else 1.0)
    pixels = rearrange((cond + 1.0) * 127.5, "c h w -> h w c").round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB"), Image.fromarray((mask * 255).astype(np.uint8), "L"), box


class _NoInitImage:
    """Stands in for the pipeline's image processor when `image` is None: diffusers 0.42 preprocesses `image`
    unconditionally, though with explicit `latents` the result is only used for its shape."""

    def __init__(self, inner):
        self._inner = inner

    def preprocess(self, image, height=None, width=None, **kwargs):
        if image is None:
            return torch.zeros(1, 3, height, width)
        return self._inner.preprocess(image, height=height, width=width, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def load_lora(pipe, lora_dir_or_file: str | Path, adapter_name: str) -> None:
    """Load a LoRA onto `pipe.transformer`: a kohya file of the block keys this project exports goes through its
    own mapping (`kohya_to_diffusers`: any transformer width); anything else through diffusers' loader."""
    from safetensors import safe_open

    from trainer.export import is_kohya_state_dict, kohya_to_diffusers

    path = Path(lora_dir_or_file)
    if path.is_file() and path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
        if is_kohya_state_dict(keys):
            from safetensors.torch import load_file

            pipe.load_lora_weights(kohya_to_diffusers(load_file(str(path)), pipe.transformer),
                                   adapter_name=adapter_name)
            return
    pipe.load_lora_weights(str(path), adapter_name=adapter_name)


@contextlib.contextmanager
def _lora(pipe, lora_dir_or_file: str | Path | None):
    """Load a LoRA (diffusers folder / file, or kohya file) for one call; removed afterwards."""
    if lora_dir_or_file is None:
        yield
        return
    name = f"infer_{uuid.uuid4().hex[:8]}"
    load_lora(pipe, lora_dir_or_file, name)
    try:
        yield
    finally:
        pipe.delete_adapters(name)


@torch.no_grad()
def _fill(pipe, prompt: str, cond: torch.Tensor, mask: np.ndarray, steps: int, guidance: float, seed: int,
          max_sequence_length: int, modify: torch.Tensor | None = None) -> Image.Image:
    """`modify`: the 448-channel base's extra input (trainer/packing.py fill_condition), encoded like `cond` and
    placed between the condition's latents and the mask."""
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    channels, factor = pipe.vae.config.latent_channels, pipe.vae_scale_factor
    h, w = cond.shape[-2:]
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((1, channels, h // factor, w // factor), generator=generator)
    latents = rearrange(noise, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2).to(device, dtype)
    mask_t = torch.from_numpy(mask)[None, None].to(device, dtype)
    packed_mask, cond_latents = pipe.prepare_mask_latents(
        mask_t, cond[None].to(device, dtype), 1, channels, 1, h, w, dtype, device, generator)
    extra = []
    if modify is not None:
        extra = [pipe.prepare_mask_latents(mask_t, modify[None].to(device, dtype), 1, channels, 1, h, w, dtype,
                                           device, generator)[1]]
    processor = pipe.image_processor
    pipe.image_processor = _NoInitImage(processor)
    try:
        return pipe(prompt=prompt, masked_image_latents=torch.cat([cond_latents, *extra, packed_mask], dim=-1),
                    latents=latents, height=h, width=w, num_inference_steps=steps, guidance_scale=guidance,
                    generator=generator, max_sequence_length=max_sequence_length).images[0]
    finally:
        pipe.image_processor = processor


def run_infer(pipe, prompt: str, edit_image: Image.Image | None, edit_mask: Image.Image | None = None,
              ref_image: Image.Image | None = None, lora_dir_or_file: str | Path | None = None, steps: int = 28,
              guidance: float = 50.0, seed: int = 0, repainting_scale: float | None = None, task: str | None = None,
              layout: str = "in_place", max_tokens: int = MAX_TOKENS, size: tuple[int, int] = (1024, 1024),
              max_sequence_length: int = 512) -> Image.Image:
    """Edit `edit_image` (or generate on a blank canvas of `size` (w, h) when it is None) with a
    FluxFillPipeline (ACE++ LoRA optional); returns an image of the edit image's size (or `size`).

    The repainting scale and where a mask-less edit image goes follow `resolve` (the training layout).
    """
    out_size = edit_image.size if edit_image is not None else size
    edit, mask_in, refs, scale = resolve(edit_image, edit_mask, ref_image, repainting_scale, task, layout)
    canvas, mask, box = _layout(edit, mask_in, refs, max_tokens, out_size)
    cond = _condition(canvas, mask, scale)
    modify = None
    if check_in_channels(pipe.transformer.config.in_channels, "the base") == FFT_IN_CHANNELS:
        modify = _condition(canvas, mask, 0.0) * torch.from_numpy(mask)[None]  # the source under the mask
    with _lora(pipe, lora_dir_or_file):
        out = _fill(pipe, prompt, cond, mask, steps, guidance, seed, max_sequence_length, modify)
    return out.crop(box).resize(out_size, Image.BICUBIC)
