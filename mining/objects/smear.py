"""Does a fill show a smear a person would see? Texture statistics of the filled region against its ring.

Diffusion fills (cv2.inpaint Telea / Navier-Stokes) on a large hole propagate the border's colours inward:
the inside loses the surround's fine detail and turns into streaks that run from the border toward the
middle, so the image gradient inside points along the hole's contour. Two statistics, on the grey image:

- detail: fine-detail energy (|grey - its Gaussian blur|) of the ring outside the hole over that of the
  hole's inside, each + 1 grey level (a smooth fill on a smooth surround is no smear): 1 when alike,
  large when the fill is flatter than what surrounds it;
- streak: the share of the inside's gradient energy along the tangent of the hole's contour (the level
  lines of the distance to the border), as odds: 1 for texture with no preferred direction, large for
  streaks that radiate from the border.

smear_ratio = detail * sqrt(streak): about 1 for the true background, several times that for a diffusion
fill on a textured surround. A hole too thin to smear (inscribed radius under MIN_RADIUS px) scores 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mining.supervision import View
    from schemas.config import SupervisionConfig

MIN_RADIUS = 6.0  # px: thinner holes are filled from both sides at once and show no visible streaks
_INSET = 2.5  # px inside the border left out (the gradient there straddles the border)
_MIN_PIXELS = 64


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32) if rgb.ndim == 3 \
        else rgb.astype(np.float32)


def _tangent_share(gx: np.ndarray, gy: np.ndarray, dist: np.ndarray, sel: np.ndarray) -> float:
    """Share of the gradient energy in `sel` along the level lines of `dist` (0.5 for no preferred direction)."""
    import cv2

    dx, dy = cv2.Sobel(dist, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(dist, cv2.CV_32F, 0, 1, ksize=3)
    n = np.hypot(dx, dy)
    ok = sel & (n > 1e-3)  # the medial axis has no direction
    e = gx[ok] ** 2 + gy[ok] ** 2
    if not ok.any() or e.sum() < 1e-6:
        return 0.5
    along = (gx[ok] * -dy[ok] + gy[ok] * dx[ok]) / n[ok]
    return float((along ** 2).sum() / e.sum())


def smear_scores(filled: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The smear statistics of `filled` (RGB or grey) inside the boolean `mask` against the ring outside it:
    smear_detail, smear_streak, smear_ratio (1.0 each when the hole is too thin to judge)."""
    import cv2

    m8 = np.ascontiguousarray(mask, dtype=np.uint8)
    din = cv2.distanceTransform(m8, cv2.DIST_L2, 5)
    radius = float(din.max(initial=0.0))
    inner = din > _INSET
    if radius < MIN_RADIUS or np.count_nonzero(inner) < _MIN_PIXELS or m8.all():
        return {"smear_detail": 1.0, "smear_streak": 1.0, "smear_ratio": 1.0}
    dout = cv2.distanceTransform(1 - m8, cv2.DIST_L2, 5)
    ring = (dout > 1.5) & (dout <= 1.5 + max(6.0, radius))
    g = _grey(filled)
    fine = np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.5))
    detail = (float(fine[ring].mean()) + 1.0) / (float(fine[inner].mean()) + 1.0) if ring.any() else 1.0
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    share = min(_tangent_share(gx, gy, din, inner), 0.98)
    streak = share / (1.0 - share)
    return {"smear_detail": round(detail, 4), "smear_streak": round(streak, 4),
            "smear_ratio": round(detail * float(np.sqrt(streak)), 4)}


# where a packed sample holds a fill: the removal's result is the target of a removal and the edit of its
# reverse (the addition) and of layer_fusion (the background under its mask). No fill in layer_decouple
# (source -> the object on white) nor in inpainting / outpainting (their target is the real photo).
FILLED = {"object_removal": "target", "text_removal": "target",
          "object_addition": "edit", "text_addition": "edit", "layer_fusion": "edit"}


def fill_ok(v: View, cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """`smear` when the fill inside the edit's mask is too far from its ring (cfg.smear_max_ratio); passes a
    task with no fill (FILLED) or a sample without a usable mask."""
    where = FILLED.get(v.task)
    mask = v.mask
    filled = v.target if where == "target" else v.edit
    if where is None or mask is None or filled is None or filled.shape[:2] != mask.shape:
        return None, {}
    s = smear_scores(filled, mask)
    return ("smear" if s["smear_ratio"] > cfg.smear_max_ratio else None), s
