"""AceSample -> LCU++ panels at bucketed sizes under a token cap.

Buckets: a fixed set of aspect ratios; every panel is centre-cropped to its bucket's aspect and resized so
its sides are multiples of 16 pixels. canvas: all panels share one height and the whole canvas stays under
the cap; sequence: the cap is shared equally by the panels.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from schemas.records import AceSample, ConditionUnit, Role
from trainer.lcu import Panel
from trainer.packing import PIXELS_PER_TOKEN_SIDE as S

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


def sample_panels(sample: AceSample, max_tokens: int, form: str) -> list[Panel]:
    """Context panels (references, a mask-less edit image), then the target panel."""
    edit = next((u for u in sample.units if u.role is Role.EDIT), None)
    context: list[ConditionUnit] = [u for u in sample.units if u.role is Role.REFERENCE]
    local_edit = edit is not None and edit.mask is not None
    if edit is not None and not local_edit:
        context.append(edit)
    images = [_open(u.image) for u in context] + [_open(sample.target.image)]
    sizes = panel_sizes([im.width / im.height for im in images], max_tokens, form)
    panels = []
    for im, (h, w) in zip(images[:-1], sizes[:-1]):
        t = _rgb(_fit(im, h, w, Image.Resampling.BICUBIC))
        panels.append(Panel(t, t, torch.zeros(1, h, w), is_target=False))
    h, w = sizes[-1]
    target = _rgb(_fit(images[-1], h, w, Image.Resampling.BICUBIC))
    if local_edit:
        cond = _rgb(_fit(_open(edit.image), h, w, Image.Resampling.BICUBIC))
        mask = _mask(_fit(_open(edit.mask, "L"), h, w, Image.Resampling.NEAREST))
    else:
        cond, mask = torch.zeros_like(target), torch.ones(1, h, w)
    if sample.target.mask is not None:  # the target says where it differs: generate there only
        mask = _mask(_fit(_open(sample.target.mask, "L"), h, w, Image.Resampling.NEAREST))
        if not local_edit:
            cond = target
    panels.append(Panel(target, cond, mask, is_target=True))
    return panels
