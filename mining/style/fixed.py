"""Is an image already in a bank style? A member m is in bank style S when S is (nearly) a fixed point on it:
re-rendering m in S changes it little, in pixels (mean |S(m) - m| at most `max_change`, 0-255) and in style
features (cos(f(m), f(S(m))) at least `min_cos`). A poster of a poster is itself; a pencil rendering of a
photo is not, though the random-conv Gram features put many photos near their pencil renderings (cosine
0.85-0.90), so feature nearness alone cannot tell a photo reference from a styled one.

Measured (tests/mining/style/test_sets.py corpus, the demo corpus): poster and ink families change by 0-11
with feature cosine >= 0.99; photos and faces change by 18-190 under poster / pencil / ink, and by 7-50
under watercolour (cosine <= 0.93 where the change is under 16). Pencil and watercolour are not idempotent
(a pencil family changes by ~55 under pencil again, a watercolour family by ~20): sets in those styles are
not confirmed offline, and neither are lossy (JPEG) copies of a family, whose re-renderings drift in features.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mining.style.stylize import STYLES, stylize

Extractor = Callable[[list[np.ndarray]], np.ndarray]


def fixed_point(images: Sequence[np.ndarray], style: str, extractor: Extractor) -> tuple[np.ndarray, np.ndarray]:
    """(change, cosine) per image: mean |S(m) - m| over pixels and channels, and the style-feature cosine of
    m to S(m)."""
    if not len(images):
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    outs = [stylize(style, m) for m in images]
    change = np.array([np.abs(o.astype(np.int16) - m.astype(np.int16)).mean() for o, m in zip(outs, images)],
                      np.float32)
    x = extractor([*images, *outs])
    n = len(images)
    return change, (x[:n] * x[n:]).sum(1).astype(np.float32)


def in_style(images: Sequence[np.ndarray], style: str, extractor: Extractor, max_change: float,
             min_cos: float) -> tuple[np.ndarray, dict[str, float]]:
    """Per image: is it a fixed point of `style`; and the worst change and cosine measured."""
    change, cos = fixed_point(images, style, extractor)
    ok = (change <= max_change) & (cos >= min_cos)
    worst = {"fixed_change": float(change.max()) if len(change) else 0.0,
             "fixed_cos": float(cos.min()) if len(cos) else 1.0}
    return ok, worst


def set_style(images: Sequence[np.ndarray], extractor: Extractor, max_change: float, min_cos: float,
              min_share: float) -> tuple[str | None, np.ndarray]:
    """The bank style most of `images` are fixed points of, when at least `min_share` of them are: (its name,
    per-image in-style flags), else (None, all False). Pixel change is tested first (cheap); features are
    computed only for images within `max_change`."""
    best: tuple[str | None, np.ndarray] = (None, np.zeros(len(images), bool))
    need = max(1, int(np.ceil(min_share * len(images) - 1e-9)))
    for style in STYLES:
        outs = [stylize(style, m) for m in images]
        change = np.array([np.abs(o.astype(np.int16) - m.astype(np.int16)).mean() for o, m in zip(outs, images)])
        near = np.flatnonzero(change <= max_change)
        if len(near) < need or len(near) <= int(best[1].sum()):
            continue
        x = extractor([*(images[i] for i in near), *(outs[i] for i in near)])
        cos = (x[: len(near)] * x[len(near):]).sum(1)
        ok = np.zeros(len(images), bool)
        ok[near[cos >= min_cos]] = True
        if ok.sum() >= need and ok.sum() > best[1].sum():
            best = (style, ok)
            if ok.all():
                break
    return best
