"""Checks a synthesized removal must pass: the region changed, the outside did not, there is no hard
seam on the mask border, and the fill shows no smear (mining/objects/smear.py). Each failure is one named reason; scores go into the sample's lineage."""

from __future__ import annotations

import numpy as np

from mining.objects.smear import smear_scores
from schemas.config import VerifyConfig

VERIFIER = ("synth-verify", "2")
REASONS = ("outside_changed", "unchanged", "seam", "smear", "refound", "artefact")


def _grad(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the grey image (Sobel)."""
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))


def border_ring(mask: np.ndarray, px: int = 2) -> np.ndarray:
    """Pixels within `px` of the mask's boundary, on both sides."""
    import cv2

    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, k) - cv2.erode(m, k)).astype(bool)


def removal_scores(source: np.ndarray, result: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    diff = np.abs(source.astype(np.int16) - result.astype(np.int16))
    ring = border_ring(mask)
    own = float(_grad(source).mean()) + 1e-3
    return {"outside_max_diff": float(diff[~mask].max(initial=0)),
            "inside_change": float(diff[mask].mean()) if mask.any() else 0.0,
            "seam_ratio": float(_grad(result)[ring].mean()) / own if ring.any() else 0.0}


def verify_removal(source: np.ndarray, result: np.ndarray, mask: np.ndarray,
                   cfg: VerifyConfig) -> tuple[str | None, dict[str, float]]:
    """(None or the first failed check, the scores)."""
    s = removal_scores(source, result, mask)
    if s["outside_max_diff"] > 0:
        return "outside_changed", s
    if s["inside_change"] < cfg.min_change:
        return "unchanged", s
    if s["seam_ratio"] > cfg.max_seam_ratio:
        return "seam", s
    s.update(smear_scores(result, mask))
    if s["smear_ratio"] > cfg.max_smear_ratio:
        return "smear", s
    return None, s


def refound_iou(regions, mask: np.ndarray) -> float:
    """The best IoU between the removed object's mask and the regions a segmenter finds in the result."""
    area = np.count_nonzero(mask)
    best = 0.0
    for r in regions:
        inter = np.count_nonzero(r.mask & mask)
        if inter:
            best = max(best, inter / (area + np.count_nonzero(r.mask) - inter))
    return best
