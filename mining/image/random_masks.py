"""Random masks for repainting and outpainting (ACE App. B: LaMa-style irregular strokes and boxes).

Masks are boolean (H, W), True where the model repaints. All randomness comes from the generator passed in.
"""

from __future__ import annotations

import numpy as np

SIDES = ("left", "right", "top", "bottom")


def _strokes(h: int, w: int, rng: np.random.Generator, m: np.ndarray) -> None:
    """Thick random walks (LaMa's irregular masks)."""
    import cv2

    side = min(h, w)
    for _ in range(int(rng.integers(1, 4))):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        width = int(max(3, rng.uniform(0.04, 0.12) * side))
        angle = float(rng.uniform(0, 2 * np.pi))
        for _ in range(int(rng.integers(3, 9))):
            angle += float(rng.normal(0, 0.8))
            step = float(rng.uniform(0.08, 0.25) * side)
            nx, ny = np.clip(x + step * np.cos(angle), 0, w - 1), np.clip(y + step * np.sin(angle), 0, h - 1)
            cv2.line(m, (int(x), int(y)), (int(nx), int(ny)), 1, width)
            cv2.circle(m, (int(nx), int(ny)), width // 2, 1, -1)
            x, y = nx, ny


def _boxes(h: int, w: int, rng: np.random.Generator, m: np.ndarray) -> None:
    for _ in range(int(rng.integers(1, 3))):
        bw, bh = int(rng.uniform(0.1, 0.45) * w), int(rng.uniform(0.1, 0.45) * h)
        x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        m[y0:y0 + bh, x0:x0 + bw] = 1


def repaint_mask(h: int, w: int, rng: np.random.Generator, area: tuple[float, float],
                 tries: int = 20) -> tuple[np.ndarray | None, str]:
    """(mask, 'strokes' | 'boxes' | 'strokes+boxes') with an area fraction inside `area`; (None, '') when no
    draw in `tries` lands there."""
    for _ in range(tries):
        kind = str(rng.choice(["strokes", "boxes", "strokes+boxes"]))
        m = np.zeros((h, w), np.uint8)
        if "strokes" in kind:
            _strokes(h, w, rng, m)
        if "boxes" in kind:
            _boxes(h, w, rng, m)
        frac = m.mean()
        if area[0] <= frac <= area[1]:
            return m.astype(bool), kind
    return None, ""


def outpaint_mask(h: int, w: int, rng: np.random.Generator, extent: tuple[float, float]) -> tuple[np.ndarray, str, float]:
    """(mask, side, extent): a band along one side covering `extent` of the width or height."""
    side = str(rng.choice(SIDES))
    e = float(rng.uniform(*extent))
    m = np.zeros((h, w), bool)
    if side == "left":
        m[:, : max(1, round(e * w))] = True
    elif side == "right":
        m[:, w - max(1, round(e * w)):] = True
    elif side == "top":
        m[: max(1, round(e * h))] = True
    else:
        m[h - max(1, round(e * h)):] = True
    return m, side, e
