"""FLUX.1-Fill model input layout, as small shape-honest tensor functions.

Per token (2x2 latent patch): packed noisy latent (16 ch x 4 = 64) + packed masked-image latent (64) +
mask (8x8 pixel-unshuffle = 64 ch, x 4 = 256) = 384 channels into x_embedder. Mask 1 = generate, 0 = keep;
the condition image is image * (1 - repainting_scale * mask), images in [-1, 1] (ACE++: scale 1 blanks the
masked region, scale < 1 leaves a hint of the edit image there, 0 keeps it whole).
"""

from __future__ import annotations

import torch
from einops import rearrange

VAE_SCALE = 8  # FLUX's VAE downsamples 8x; packing 2x2 makes 16 pixels per token side
PIXELS_PER_TOKEN_SIDE = 2 * VAE_SCALE


def pack(latents: torch.Tensor) -> torch.Tensor:
    return rearrange(latents, "b c (h p) (w q) -> b (h w) (c p q)", p=2, q=2)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of pack; h, w are the latent height and width."""
    return rearrange(tokens, "b (h w) (c p q) -> b c (h p) (w q)", h=h // 2, w=w // 2, p=2, q=2)


def mask_tokens(mask: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) pixel mask -> (b, H/16 * W/16, 256): 8x8 pixel-unshuffle, then 2x2 pack."""
    m = rearrange(mask[:, 0], "b (h p) (w q) -> b (p q) h w", p=VAE_SCALE, q=VAE_SCALE)
    return pack(m)


def encode(vae, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] -> normalised latents (b, 16, H/8, W/8), as FLUX pipelines scale them.

    With a generator the latent is drawn from the VAE posterior (what the released trainer and diffusers'
    pipelines do); without one it is the posterior's mean.
    """
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    z = dist.mode() if generator is None else dist.sample(generator)
    return (z - vae.config.shift_factor) * vae.config.scaling_factor


def hinted(image: torch.Tensor, mask: torch.Tensor, repainting_scale: float = 1.0) -> torch.Tensor:
    """The condition image: image * (1 - repainting_scale * mask)."""
    if not 0.0 <= repainting_scale <= 1.0:
        raise ValueError(f"repainting_scale must lie in [0, 1], got {repainting_scale}")
    return image * (1 - repainting_scale * mask)


def fill_condition(vae, image: torch.Tensor, mask: torch.Tensor, repainting_scale: float = 1.0,
                   generator: torch.Generator | None = None, modify: bool = False) -> torch.Tensor:
    """The 320 conditioning channels per token: packed latent of the hinted image, then the (binary) mask.

    modify: the released ACE++ full fine-tune's 384 (x_embedder in_channels 448): the packed latent of the
    "modify" image, `image * mask` (the source pixels the mask marks for change; the whole source under a
    full mask, i.e. an instruction edit), goes between the hinted image's latent and the mask. The released
    trainer (`MODIFY_MODE`, `FluxMRModiACEPlus.prepare_input`) orders the channels this way; it is how that
    model tells editing (source visible in these channels) from repainting.
    """
    cond = hinted(image, mask, repainting_scale)
    parts = [pack(encode(vae, cond, generator))]
    if modify:
        parts.append(pack(encode(vae, image * mask, generator)))
    return torch.cat(parts + [mask_tokens(mask.to(image.dtype))], dim=-1)


def image_ids(h: int, w: int, index: int = 0, w_offset: int = 0) -> torch.Tensor:
    """Position ids (h/2 * w/2, 3) of a latent grid: axis 0 = unit index, axes 1, 2 = row, column."""
    hh, ww = h // 2, w // 2
    ids = torch.zeros(hh, ww, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(hh)[:, None]
    ids[..., 2] = torch.arange(ww)[None, :] + w_offset
    return rearrange(ids, "h w c -> (h w) c")


def tokens_for(height: int, width: int) -> int:
    return (height // PIXELS_PER_TOKEN_SIDE) * (width // PIXELS_PER_TOKEN_SIDE)
