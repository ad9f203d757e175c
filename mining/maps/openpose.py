"""OpenPose-18 pose maps as ControlNet-style pose conditions use them: black canvas, coloured limbs, joints.

Joint order (COCO-18): 0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right wrist, 5 left shoulder,
6 left elbow, 7 left wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left hip, 12 left knee, 13 left ankle,
14 right eye, 15 left eye, 16 right ear, 17 left ear. A person is an (18, 3) array (x, y, confidence) in pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# RGB, one per joint; limb i takes colour i, drawn at 60 % intensity
OPENPOSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                   (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                   (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


def draw_openpose(h: int, w: int, people: Sequence[np.ndarray], min_conf: float = 0.3) -> np.ndarray:
    """uint8 (h, w, 3) RGB pose map. Joints below `min_conf` (and limbs touching them) are left out; limb
    width and joint radius are 4 px at 512 px (the shorter side) and scale with the image."""
    import cv2

    if h < 1 or w < 1:
        raise ValueError(f"canvas size must be positive, got {h}x{w}")
    canvas = np.zeros((h, w, 3), np.uint8)
    width = max(1, round(4 * min(h, w) / 512))
    for person in people:
        p = np.asarray(person, np.float32)
        if p.shape != (18, 3):
            raise ValueError(f"a person is an (18, 3) array (x, y, confidence), got {p.shape}")
        ok = (p[:, 2] >= min_conf) & np.isfinite(p).all(axis=1)
        for i, (a, b) in enumerate(OPENPOSE_LIMBS):
            if not (ok[a] and ok[b]):
                continue
            (xa, ya), (xb, yb) = p[a, :2], p[b, :2]
            length = math.hypot(xb - xa, yb - ya)
            angle = math.degrees(math.atan2(yb - ya, xb - xa))
            centre = (int(round((xa + xb) / 2)), int(round((ya + yb) / 2)))
            poly = cv2.ellipse2Poly(centre, (max(1, int(length / 2)), width), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in OPENPOSE_COLORS[i]], lineType=cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            x, y = int(round(p[j, 0])), int(round(p[j, 1]))
            cv2.circle(canvas, (x, y), width, OPENPOSE_COLORS[j], thickness=-1, lineType=cv2.LINE_AA)
    return canvas
