"""AceSample -> LCU++ panels at bucketed sizes under a token cap.

Buckets: a fixed set of aspect ratios; every panel is centre-cropped to its bucket's aspect and resized so
its sides are multiples of 16 pixels. canvas: all panels share one height and the whole canvas stays under
the cap; sequence: the cap is shared equally by the panels.

Mask-less edits: `in_place` (released ACE++) keeps the edit image as the target panel's condition under a full
mask; `panel` makes it a context panel. A task whose hint scale is 1.0 (repainting, reference generation)
would blank a mask-less edit image entirely in place, so there it is a context panel in both layouts: the
released list would carry such an image as the reference. Reference augmentation (released trainer): each
reference is shrunk to a random height in [H/3, H] of its panel and padded back to H with zeros (mid-grey),
centred, in both its image and its condition; the panel narrows with it.
"""

from __future__ import annotations

import hashlib
import io
import math
import random

import numpy as np
import torch
from PIL import Image

from schemas.config import TrainConfig
from schemas.records import AceSample, ConditionUnit, Role
from schemas.taxonomy import default_repainting_scale
from trainer.lcu import Panel
from trainer.packing import PIXELS_PER_TOKEN_SIDE as S

LAYOUTS = ("in_place", "panel")
ASPECTS = (1 / 3, 1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0, 3.0)  # width / height


def bucket_aspect(aspect: float) -> float:
    return min(ASPECTS, key=lambda a: abs(math.log(a / aspect)))


def panel_sizes(aspects: list[float], max_tokens: int, form: str) -> list[tuple[int, int]]:
    """(height, width) in pixels per panel, multiples of 16, total tokens <= max_tokens."""
    b = [bucket_aspect(a) for a in aspects]
    if form == "canvas":
        th = max(1, int(math.sqrt(max_tokens / sum(b))))
        while th > 1 and th * sum(max(1, int(th * a)) for a in b) > max_tokens:
            th -= 1
        return [(th * S, max(1, int(th * a)) * S) for a in b]
    out = []
    budget = max_tokens // len(b)
    for a in b:
        th = max(1, int(math.sqrt(budget / a)))
        tw = max(1, int(th * a))
        while th * tw > budget and th > 1:
            th -= 1
            tw = max(1, int(th * a))
        out.append((th * S, tw * S))
    return out


def _open(data: bytes, mode: str = "RGB") -> Image.Image:
    return Image.open(io.BytesIO(data)).convert(mode)


def _fit(im: Image.Image, h: int, w: int, resample: Image.Resampling) -> Image.Image:
    """Centre-crop to w/h, then resize to (w, h)."""
    aspect = w / h
    iw, ih = im.size
    if iw / ih > aspect:
        cw = max(1, round(ih * aspect))
        im = im.crop(((iw - cw) // 2, 0, (iw - cw) // 2 + cw, ih))
    else:
        ch = max(1, round(iw / aspect))
        im = im.crop((0, (ih - ch) // 2, iw, (ih - ch) // 2 + ch))
    return im.resize((w, h), resample)


def _rgb(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, np.float32) / 127.5 - 1).permute(2, 0, 1)


def _mask(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy((np.asarray(im) > 127).astype(np.float32))[None]


def _scale_pad(im: Image.Image, h: int, w: int, rng: random.Random) -> tuple[torch.Tensor, int]:
    """(3, h, w') reference panel: the image at a random height in [h/3, h], centred on a zero band of height
    h; w' = its width at that height, floored to a multiple of 16."""
    rh = rng.randint(max(1, h // 3), h)
    pw = max(S, int(w * rh / h) // S * S)
    panel = torch.zeros(3, h, pw)
    top = (h - rh) // 2
    panel[:, top:top + rh] = _rgb(_fit(im, rh, pw, Image.Resampling.BICUBIC))
    return panel, pw


def panel_options(cfg: TrainConfig, sample: AceSample) -> dict:
    """sample_panels' options from a training config; the reference augmentation draws from (seed, key)."""
    seed = int.from_bytes(hashlib.sha256(f"{cfg.seed}|{sample.key}".encode()).digest()[:8], "big")
    return {"layout": cfg.maskless_layout, "ref_rng": random.Random(seed) if cfg.ref_scale_pad else None,
            "repainting_scale": cfg.repainting_scale(sample.task)}


def sample_panels(sample: AceSample, max_tokens: int, form: str, layout: str = "in_place",
                  ref_rng: random.Random | None = None, repainting_scale: float | None = None) -> list[Panel]:
    """Context panels (references; a mask-less edit image with layout `panel`), then the target panel.

    `ref_rng`: draw the reference scale-and-pad augmentation from it (None: references fill their panels).
    `repainting_scale`: the task's hint scale (None: its released default); only 1.0 changes the layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown mask-less layout {layout!r}; use one of {LAYOUTS}")
    if repainting_scale is None:
        repainting_scale = default_repainting_scale(sample.task)
    edit = next((u for u in sample.units if u.role is Role.EDIT), None)
    refs: list[ConditionUnit] = [u for u in sample.units if u.role is Role.REFERENCE]
    local_edit = edit is not None and edit.mask is not None
    edit_panel = edit is not None and not local_edit and (layout == "panel" or repainting_scale >= 1.0)
    context = refs + ([edit] if edit_panel else [])
    images = [_open(u.image) for u in context] + [_open(sample.target.image)]
    sizes = panel_sizes([im.width / im.height for im in images], max_tokens, form)
    panels = []
    for i, (im, (h, w)) in enumerate(zip(images[:-1], sizes[:-1])):
        if ref_rng is not None and i < len(refs):
            t, w = _scale_pad(im, h, w, ref_rng)
        else:
            t = _rgb(_fit(im, h, w, Image.Resampling.BICUBIC))
        panels.append(Panel(t, t, torch.zeros(1, h, w), is_target=False))
    h, w = sizes[-1]
    target = _rgb(_fit(images[-1], h, w, Image.Resampling.BICUBIC))
    if edit is not None and not edit_panel:  # the edit image in place: local edits, released mask-less edits
        cond = _rgb(_fit(_open(edit.image), h, w, Image.Resampling.BICUBIC))
        mask = (_mask(_fit(_open(edit.mask, "L"), h, w, Image.Resampling.NEAREST)) if local_edit
                else torch.ones(1, h, w))
    else:
        cond, mask = torch.zeros_like(target), torch.ones(1, h, w)
    if sample.target.mask is not None:  # the target says where it differs: generate there only
        mask = _mask(_fit(_open(sample.target.mask, "L"), h, w, Image.Resampling.NEAREST))
        if edit is None or edit_panel:
            cond = target
    panels.append(Panel(target, cond, mask, is_target=True))
    return panels
