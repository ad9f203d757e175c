"""Mask filters for object removal (ACE App. B.5.2): keep the segmenter's masks that look like whole objects.

Every mask ends as kept or dropped with exactly one reason (the first check it fails, in the order below);
`FilterResult` reconciles: candidates = kept + sum of drops. Given the image, a mask that passes the shape
checks must also be object-like (mining/objects/objectness.py, `min_objectness`; else not_object).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from mining.objects.objectness import ObjectnessMaps, objectness
from mining.objects.segment import Region
from schemas.config import MaskFilterConfig

REASONS = ("empty", "low_score", "too_small", "area_low", "area_high", "box_fill", "aspect", "border", "not_object",
           "overlap")


@dataclass(frozen=True)
class MaskStats:
    area_frac: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    box_fill: float
    aspect: float
    border_frac: float
    objectness: float | None = None  # None: not computed (no image given, or min_objectness 0)


@dataclass
class FilterResult:
    kept: list[tuple[Region, MaskStats]] = field(default_factory=list)
    dropped: list[tuple[Region, MaskStats | None, str]] = field(default_factory=list)

    @property
    def drops(self) -> dict[str, int]:
        return dict(sorted(Counter(r for _, _, r in self.dropped).items()))

    @property
    def candidates(self) -> int:
        return len(self.kept) + len(self.dropped)


def mask_stats(mask: np.ndarray) -> MaskStats | None:
    """None for an empty mask."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return None
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    bw, bh = x1 - x0, y1 - y0
    frame = np.count_nonzero(mask[0]) + np.count_nonzero(mask[-1]) + np.count_nonzero(mask[1:-1, 0]) \
        + np.count_nonzero(mask[1:-1, -1])
    return MaskStats(area_frac=area / (h * w), box=(x0, y0, x1, y1), box_fill=area / (bw * bh),
                     aspect=max(bw, bh) / min(bw, bh), border_frac=frame / max(1, 2 * (h + w) - 4))


def _reason(r: Region, s: MaskStats | None, cfg: MaskFilterConfig) -> str | None:
    if s is None:
        return "empty"
    x0, y0, x1, y1 = s.box
    if r.score < cfg.min_score:
        return "low_score"
    if min(x1 - x0, y1 - y0) < cfg.min_side_px:
        return "too_small"
    if s.area_frac < cfg.min_area_frac:
        return "area_low"
    if s.area_frac > cfg.max_area_frac:
        return "area_high"
    if s.box_fill < cfg.min_box_fill:
        return "box_fill"
    if s.aspect > cfg.max_aspect:
        return "aspect"
    if s.border_frac > cfg.max_border_frac:
        return "border"
    return None


def filter_masks(regions: list[Region], cfg: MaskFilterConfig, image: np.ndarray | None = None) -> FilterResult:
    """The masks in order of score (best first): the shape checks, objectness when `image` is given (RGB, the
    masks' size), then overlap with the masks kept so far (intersection over the smaller area)."""
    out = FilterResult()
    maps: ObjectnessMaps | None = None
    for r in sorted(regions, key=lambda r: -r.score):
        s = mask_stats(r.mask)
        reason = _reason(r, s, cfg)
        if reason is None and image is not None and cfg.min_objectness > 0:
            if r.mask.shape != image.shape[:2]:
                raise ValueError(f"mask filters: a {r.mask.shape} mask on a {image.shape[:2]} image")
            maps = maps or ObjectnessMaps.of(image)
            s = replace(s, objectness=objectness(maps, r.mask)["objectness"])  # type: ignore[arg-type]
            if s.objectness < cfg.min_objectness:
                reason = "not_object"
        if reason is None:
            area = np.count_nonzero(r.mask)
            for k, _ in out.kept:
                inter = np.count_nonzero(r.mask & k.mask)
                if inter / max(1, min(area, np.count_nonzero(k.mask))) > cfg.max_overlap:
                    reason = "overlap"
                    break
        if reason is None:
            out.kept.append((r, s))  # type: ignore[arg-type]
        else:
            out.dropped.append((r, s, reason))
    if out.candidates != len(regions):  # every region kept or dropped with a reason, never lost
        raise RuntimeError(f"mask filters: {len(regions)} regions in, {out.candidates} accounted for")
    return out
