"""Is a region an object, or a piece of a larger texture? A score in [0, 1] from the image around the mask.

A region is object-like when it stands out from a ring just outside it and its outline is a real edge:

- contrast: the mean Lab colour distance between the inside and the ring, plus the difference of their fine
  detail (|log| of the ratio of |grey - blur| energies): 1 - exp(-(colour / COLOUR_SCALE + texture));
- edge: the smoothed gradient on the mask's boundary over the ring's median gradient, (edge - 1) / EDGE_SPAN
  clipped to [0, 1]: a cut through homogeneous texture (a patch of grass, fur, sky) scores about 1 (0 here),
  an outline several times its surround's gradient scores 1;
- solidity: area over the convex hull's area (a sliver or a ragged piece of a texture scores low).

objectness = contrast x edge x solidity. Maps are computed once per image (`ObjectnessMaps`), each region's
statistics on a crop around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOUR_SCALE = 20.0  # Lab units: a distance of 20 gives contrast 0.63 on its own
EDGE_SPAN = 3.0  # boundary / ring gradient of 1 + EDGE_SPAN scores a full edge
_BAND = 2.0  # px either side of the boundary


@dataclass(frozen=True)
class ObjectnessMaps:
    lab: np.ndarray  # float32 (H, W, 3)
    grad: np.ndarray  # gradient magnitude of the smoothed grey image
    fine: np.ndarray  # |grey - its blur|: fine detail

    @classmethod
    def of(cls, image: np.ndarray) -> ObjectnessMaps:
        import cv2
        from skimage.color import rgb2lab

        rgb = np.ascontiguousarray(image if image.ndim == 3 else np.repeat(image[..., None], 3, -1))
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        smooth = cv2.GaussianBlur(g, (0, 0), 1.5)
        grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
        return cls(lab=rgb2lab(rgb).astype(np.float32), grad=grad, fine=np.abs(g - smooth))


def objectness(maps: ObjectnessMaps, mask: np.ndarray) -> dict[str, float]:
    """objectness and its parts (obj_colour in Lab units, obj_texture, obj_edge ratio, obj_solidity) of the
    boolean `mask` (the image's size); 0 for an empty mask or one with no ring (it covers the image)."""
    import cv2

    area = int(np.count_nonzero(mask))
    if area == 0 or area == mask.size:
        return {"objectness": 0.0}
    width = max(3, round(0.35 * np.sqrt(area / np.pi)))
    pad = int(_BAND) + width + 2
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1 = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + 1 + pad)
    x0, x1 = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + 1 + pad)
    m8 = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8)
    din = cv2.distanceTransform(m8, cv2.DIST_L2, 5)
    dout = cv2.distanceTransform(1 - m8, cv2.DIST_L2, 5)
    inside = din > _BAND
    if not inside.any():
        inside = m8.astype(bool)
    ring = (dout > _BAND) & (dout <= _BAND + width)
    if not ring.any():
        return {"objectness": 0.0}
    band = (din <= _BAND) & (dout <= _BAND)
    lab, grad, fine = (a[y0:y1, x0:x1] for a in (maps.lab, maps.grad, maps.fine))
    colour = float(np.linalg.norm(lab[inside].mean(0) - lab[ring].mean(0)))
    texture = abs(float(np.log((fine[inside].mean() + 1.0) / (fine[ring].mean() + 1.0))))
    edge = float(grad[band].mean()) / (float(np.median(grad[ring])) + 1.0)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    solidity = min(1.0, area / max(1.0, hull))
    contrast = 1.0 - float(np.exp(-(colour / COLOUR_SCALE + texture)))
    score = contrast * float(np.clip((edge - 1.0) / EDGE_SPAN, 0.0, 1.0)) * solidity
    return {"objectness": round(score, 4), "obj_colour": round(colour, 3), "obj_texture": round(texture, 4),
            "obj_edge": round(edge, 4), "obj_solidity": round(solidity, 4)}
