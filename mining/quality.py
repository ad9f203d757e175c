"""Quality scores of one packed sample: how much, and where, the target differs from the edit image.

Measured on the sample's decoded view (mining/supervision.py's View, decoded once for the checks too):

- `changed_in_mask`: share of the pixels inside the edit's mask whose largest channel difference exceeds
  CHANGED_LEVEL (the whole image when the edit has no mask);
- `changed_out_mask`: the same share outside the mask (None without a mask: nothing is meant to stay);
- `ssim_change`: 1 - SSIM (scikit-image) of the grey edit and target, at most SSIM_SIDE px on a side;
- `siglip_similarity`, `clip_direction`: image-image similarity and the instruction-direction score
  (mining/models/siglip_pair.py), only when the SigLIP weights are present: otherwise None, never a stand-in.

A sample without an edit image (series, reference generation) has None for the pixel scores: nothing of its
inputs is meant to be kept. Every score is in the sample's json (`quality`) and the set's samples table.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mining.supervision import CHANGED_LEVEL, View

QUALITY_VERSION = "1"
FIELDS = ("changed_in_mask", "changed_out_mask", "ssim_change", "siglip_similarity", "clip_direction")
MODEL_FIELDS = ("siglip_similarity", "clip_direction")
SSIM_SIDE = 256


def _fit(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if a.shape[:2] == shape:
        return a
    return cv2.resize(a, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def changed_shares(edit: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> tuple[float, float | None]:
    """(changed share inside `mask`, or everywhere without one; changed share outside it, None without one)."""
    t = _fit(target, edit.shape[:2])
    changed = np.abs(edit.astype(np.int16) - t.astype(np.int16)).max(-1) > CHANGED_LEVEL
    if mask is None or mask.shape != changed.shape or mask.all() or not mask.any():
        return float(changed.mean()), None
    return float(changed[mask].mean()), float(changed[~mask].mean())


def ssim_change(edit: np.ndarray, target: np.ndarray) -> float:
    """1 - SSIM of the grey images (target resized to the edit's size; both to at most SSIM_SIDE on a side)."""
    import cv2
    from skimage.metrics import structural_similarity

    h, w = edit.shape[:2]
    scale = min(1.0, SSIM_SIDE / max(h, w))
    size = (max(7, round(h * scale)), max(7, round(w * scale)))
    a = cv2.cvtColor(_fit(edit, size), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(_fit(target, size), cv2.COLOR_RGB2GRAY)
    return float(1.0 - structural_similarity(a, b, data_range=255))


PairScorer = Callable[..., dict[str, float]]  # (edit image, target image, instruction) -> model scores


def score_view(v: View, has_edit: bool, pair_scorer: PairScorer | None = None) -> dict[str, float | None]:
    """Every field of FIELDS: a float, or None where it cannot be measured (no edit image, no mask, no model)."""
    out: dict[str, float | None] = dict.fromkeys(FIELDS)
    if not has_edit or v.edit is None:
        return out
    inside, outside = changed_shares(v.edit, v.target, v.mask)
    out["changed_in_mask"] = round(inside, 5)
    out["changed_out_mask"] = None if outside is None else round(outside, 5)
    out["ssim_change"] = round(ssim_change(v.edit, v.target), 5)
    if pair_scorer is not None:
        from PIL import Image

        out.update(pair_scorer(Image.fromarray(v.edit), Image.fromarray(v.target), v.instruction))
    return out


def make_pair_scorer(models_dir: str) -> PairScorer | None:
    """The SigLIP pair scorer when its weights are in `models_dir`, else None (the model scores stay None)."""
    from mining.models.siglip_pair import SiglipPairScorer

    scorer = SiglipPairScorer(models_dir)
    return None if scorer.missing() else scorer


def identity(models_dir: str) -> dict[str, str]:
    """What the scores of a set depend on: this module's version and whether the model scores are measured."""
    return {"quality": QUALITY_VERSION, "pair_model": "siglip" if make_pair_scorer(models_dir) else "absent"}


THUMB_SIDE = 128  # px, the height of one panel of a thumbnail strip


def visible_mask(m: np.ndarray) -> np.ndarray:
    """A mask a person can see: group labels (1, 2, ...) stretched to 0-255, a 0/255 mask kept as it is."""
    top = int(m.max()) if m.size else 0
    if top == 0 or top == 255:
        return m.astype(np.uint8)
    return (m.astype(np.float32) * (255.0 / top)).round().astype(np.uint8)


def thumbnail_strip(sample) -> bytes:
    """A JPEG strip of one sample for the dataset report: edit (or first input) | its mask | target, each
    THUMB_SIDE px high; a missing edit or mask is a mid-grey panel."""
    import io

    from PIL import Image

    from schemas.records import Role

    def panel(data: bytes | None, mode: str) -> Image.Image:
        if data is None:
            return Image.new("RGB", (THUMB_SIDE, THUMB_SIDE), (128, 128, 128))
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert(mode)
            if mode == "L":
                im = Image.fromarray(visible_mask(np.asarray(im)))
            w = min(THUMB_SIDE * 2, max(1, round(im.width * THUMB_SIDE / im.height)))
            return im.convert("RGB").resize((w, THUMB_SIDE), Image.Resampling.BILINEAR)

    roles = [u.role for u in sample.units]
    first = sample.units[roles.index(Role.EDIT)] if Role.EDIT in roles else (sample.units[0] if sample.units else None)
    mask = first.mask if first is not None and first.mask is not None else sample.target.mask
    panels = [panel(first.image if first else None, "RGB"), panel(mask, "L"), panel(sample.target.image, "RGB")]
    strip = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), THUMB_SIDE), (255, 255, 255))
    x = 0
    for p in panels:
        strip.paste(p, (x, (THUMB_SIDE - p.height) // 2))
        x += p.width + 4
    buf = io.BytesIO()
    strip.save(buf, "JPEG", quality=80)
    return buf.getvalue()
