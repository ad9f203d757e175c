"""ACE++ inference on FLUX.1-Fill: the canvas layout of the released LoRAs, then one FluxFillPipeline call.

Canvas: the reference (if any) resized to the edit image's height sits left of the edit image; the mask is 0
over the reference and the edit mask over the edit part (mask 1 = generate). The condition is
`image * (1 - mask * repainting_scale)` in [-1, 1] (ACE++'s `repainting_scale`: 1 repaints the masked region
from scratch, 0 keeps the original pixels there as a hint). An edit mask with no pixel above 128 counts as
all-ones, as in ACE++.

FluxFillPipeline builds its condition as `image * (1 - mask)`, which erases the hint of repainting_scale < 1,
so the condition latents are prepared here (`prepare_mask_latents`, as ACE++'s diffusers inference does) and
passed as `masked_image_latents` with explicit initial `latents`.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

MULTIPLE = 16  # VAE factor 8 x 2x2 packing: canvas sides must be multiples of 16


def _floor16(x: float) -> int:
    return max(MULTIPLE, int(x) // MULTIPLE * MULTIPLE)  # never 0: a side under 16 px rounds up to 16


def _layout(edit_image: Image.Image, edit_mask: Image.Image | None, ref_image: Image.Image | None,
            max_side: int) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]:
    """Unblended canvas (RGB), mask in {0, 1} as float32 [H, W], and the edit part's box (l, t, r, b)."""
    edit = edit_image.convert("RGB")
    ew, eh = edit.size
    if edit_mask is None:
        mask = np.ones((eh, ew), dtype=bool)
    else:
        if edit_mask.size != edit.size:
            raise ValueError(f"edit_mask is {edit_mask.size}, edit_image is {edit.size}: they must match")
        mask = np.asarray(edit_mask.convert("L")) > 128
        if not mask.any():
            mask[:] = True
    ref = ref_image.convert("RGB") if ref_image is not None else None
    ref_w = ref.width * eh / ref.height if ref is not None else 0.0  # at the edit image's height
    scale = min(1.0, max_side / max(eh, ref_w + ew))
    h, w_edit = _floor16(eh * scale), _floor16(ew * scale)
    w_ref = _floor16(ref_w * scale) if ref is not None else 0
    canvas = Image.new("RGB", (w_ref + w_edit, h))
    full = np.zeros((h, w_ref + w_edit), dtype=np.float32)
    if ref is not None:
        canvas.paste(ref.resize((w_ref, h), Image.BICUBIC), (0, 0))
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


def ace_canvas(edit_image: Image.Image, edit_mask: Image.Image | None = None, ref_image: Image.Image | None = None,
               repainting_scale: float = 1.0, max_side: int = 1024):
    """(condition canvas PIL RGB, mask PIL L in {0, 255}, box of the edit part) for ACE++.

    Sides are scaled down so the longer canvas side is at most `max_side`, then each part's width and the
    height are rounded down to multiples of 16 separately, so the box edges are exact.
    """
    canvas, mask, box = _layout(edit_image, edit_mask, ref_image, max_side)
    cond = _condition(canvas, mask, repainting_scale)
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


@contextlib.contextmanager
def _lora(pipe, lora_dir_or_file: str | Path | None):
    """Load a LoRA (diffusers folder / file, or kohya file) for one call; removed afterwards."""
    if lora_dir_or_file is None:
        yield
        return
    name = f"infer_{uuid.uuid4().hex[:8]}"
    pipe.load_lora_weights(str(lora_dir_or_file), adapter_name=name)
    try:
        yield
    finally:
        pipe.delete_adapters(name)


@torch.no_grad()
def _fill(pipe, prompt: str, cond: torch.Tensor, mask: np.ndarray, steps: int, guidance: float, seed: int,
          max_sequence_length: int) -> Image.Image:
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    channels, factor = pipe.vae.config.latent_channels, pipe.vae_scale_factor
    h, w = cond.shape[-2:]
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((1, channels, h // factor, w // factor), generator=generator)
    latents = rearrange(noise, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2).to(device, dtype)
    mask_t = torch.from_numpy(mask)[None, None].to(device, dtype)
    packed_mask, cond_latents = pipe.prepare_mask_latents(
        mask_t, cond[None].to(device, dtype), 1, channels, 1, h, w, dtype, device, generator)
    processor = pipe.image_processor
    pipe.image_processor = _NoInitImage(processor)
    try:
        return pipe(prompt=prompt, masked_image_latents=torch.cat([cond_latents, packed_mask], dim=-1),
                    latents=latents, height=h, width=w, num_inference_steps=steps, guidance_scale=guidance,
                    generator=generator, max_sequence_length=max_sequence_length).images[0]
    finally:
        pipe.image_processor = processor


def run_infer(pipe, prompt: str, edit_image: Image.Image, edit_mask: Image.Image | None = None,
              ref_image: Image.Image | None = None, lora_dir_or_file: str | Path | None = None, steps: int = 28,
              guidance: float = 50.0, seed: int = 0, repainting_scale: float = 1.0, max_side: int = 1024,
              max_sequence_length: int = 512) -> Image.Image:
    """Edit `edit_image` with a FluxFillPipeline (ACE++ LoRA optional); returns an image of the edit image's size.

    With no mask and no reference (a global instruction edit), the source goes left as context and the
    right part is generated whole: the layout aceforge trains mask-less edits on (trainer/panels.py).
    """
    if edit_mask is None and ref_image is None:
        ref_image = edit_image
    canvas, mask, box = _layout(edit_image, edit_mask, ref_image, max_side)
    cond = _condition(canvas, mask, repainting_scale)
    with _lora(pipe, lora_dir_or_file):
        out = _fill(pipe, prompt, cond, mask, steps, guidance, seed, max_sequence_length)
    return out.crop(box).resize(edit_image.size, Image.BICUBIC)
