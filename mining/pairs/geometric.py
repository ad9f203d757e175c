"""One subject, confirmed by geometry: keypoints of two images matched and fitted by RANSAC.

An embedding cosine can join two photos that only share a palette (the offline DCT embedder cannot tell a
subject from its colours), and union-find chains join images that are not alike at all. Two views of one
subject (a crop, a rescale, a slight rotation, a mirror, a colour or compression change) share keypoints
that one similarity transform (rotation, scale, shift) maps onto each other; two different photos do not.
Keypoint descriptors are not mirror-invariant, so the second image's mirror is matched too.

`coherent_group` and `coherent_pair` are the supervision checks (series / reference groups, general-editing
pairs); `Verifier` is the same test over image ids, for the mining stage.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from schemas.config import SupervisionConfig

if TYPE_CHECKING:
    from mining.supervision import View

MAX_SIDE = 512  # images are matched at most this large
MIN_SIDE = 96  # smaller images are upscaled: the detector keeps ~16 px clear of the border
N_FEATURES = 500  # keypoints kept per image (the strongest)
CONTRAST = 0.02  # SIFT contrast threshold, half the usual: low-texture photos (sky, walls) keep keypoints
RATIO = 0.75  # Lowe's ratio test on the two nearest descriptors
MAX_SCALE = 8.0  # a fit scaling by more than this (or less than its inverse) is no view of one subject


@dataclass(frozen=True)
class Features:
    pts: np.ndarray  # (n, 2) float32 keypoint positions in the matched image
    desc: np.ndarray  # (n, 128) float32 SIFT descriptors
    diagonal: float  # of the matched image, in its pixels


@dataclass(frozen=True)
class Match:
    inliers: int  # distinct keypoints of the second image that the RANSAC fit maps within tolerance
    matches: int  # keypoint matches passing the ratio test (of the orientation that won)
    flipped: bool  # the second image's mirror gave the inliers


def grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey image, its longer side at most MAX_SIDE and its shorter side at least MIN_SIDE (where the
    longer side allows)."""
    import cv2

    a = np.asarray(image)
    if a.size == 0:
        return np.zeros((MIN_SIDE, MIN_SIDE), np.uint8)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float32) * (255.0 if a.dtype == bool or a.max() <= 1.0 else 1.0), 0, 255)
        a = a.astype(np.uint8)
    if a.ndim == 3:
        a = a[..., 0] if a.shape[2] == 1 else cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    h, w = a.shape
    s = min(1.0, MAX_SIDE / max(h, w))
    if min(h, w) * s < MIN_SIDE:
        s = min(MIN_SIDE / min(h, w), 4 * MAX_SIDE / max(h, w))
    if s != 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return np.ascontiguousarray(a)


def features(g: np.ndarray, n: int | None = None) -> Features:
    """SIFT keypoints of a grey image from `grey`."""
    import cv2

    kps, desc = cv2.SIFT_create(nfeatures=n or N_FEATURES, contrastThreshold=CONTRAST).detectAndCompute(g, None)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    desc = np.zeros((0, 128), np.float32) if desc is None else desc.astype(np.float32)
    return Features(pts, desc, float(np.hypot(*g.shape)))


def _inliers(a: Features, b: Features) -> tuple[int, int]:
    """(inliers, ratio-test matches) of a similarity fit mapping a's keypoints onto b's."""
    import cv2

    if len(a.desc) < 2 or len(b.desc) < 2:
        return 0, 0
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.desc, b.desc, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 3:
        return 0, len(good)
    src = a.pts[[m.queryIdx for m in good]]
    dst = b.pts[[m.trainIdx for m in good]]
    tol = max(3.0, 0.01 * b.diagonal)
    fit, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=tol,
                                            maxIters=2000, confidence=0.995)
    if fit is None or mask is None:
        return 0, len(good)
    scale = float(np.sqrt(abs(np.linalg.det(fit[:, :2]))))
    if not 1 / MAX_SCALE <= scale <= MAX_SCALE:
        return 0, len(good)
    hit = mask.ravel().astype(bool)
    # several keypoints at one spot (one per orientation) count once, on each side
    n = min(len(np.unique(np.round(src[hit]), axis=0)), len(np.unique(np.round(dst[hit]), axis=0)))
    return int(n), len(good)


class Keypoints:
    """An image's features and its mirror's (computed when first needed)."""

    def __init__(self, image: np.ndarray):
        self.g = grey(image)
        self.plain = features(self.g)
        self._mirror: Features | None = None

    @property
    def mirror(self) -> Features:
        if self._mirror is None:
            self._mirror = features(np.ascontiguousarray(self.g[:, ::-1]))
        return self._mirror


def match(a: Keypoints, b: Keypoints, enough: int | None = None) -> Match:
    """The better of a -> b and a -> mirror(b); the mirror is skipped once a -> b reaches `enough`."""
    n, m = _inliers(a.plain, b.plain)
    if enough is not None and n >= enough:
        return Match(n, m, False)
    nf, mf = _inliers(a.plain, b.mirror)
    return Match(nf, mf, True) if nf > n else Match(n, m, False)


def same_subject(a: np.ndarray, b: np.ndarray, min_inliers: int) -> tuple[bool, Match]:
    """Do two images (RGB or grey, any sizes) show one subject?"""
    m = match(Keypoints(a), Keypoints(b), enough=min_inliers)
    return m.inliers >= min_inliers, m


class Verifier:
    """`same(a, b)` over image ids: features of the last `cache` images loaded and the answers of the last
    `answers` pairs are kept, so memory is bounded whatever the number of images."""

    def __init__(self, load: Callable[[str], np.ndarray], min_inliers: int, cache: int = 128,
                 answers: int = 65536):
        self.load, self.min_inliers, self.cache, self.answers = load, min_inliers, cache, answers
        self._pairs: OrderedDict[str, Keypoints] = OrderedDict()
        self._done: OrderedDict[tuple[str, str], int] = OrderedDict()

    def _get(self, key: str) -> Keypoints:
        if key in self._pairs:
            self._pairs.move_to_end(key)
            return self._pairs[key]
        p = self._pairs[key] = Keypoints(self.load(key))
        if len(self._pairs) > self.cache:
            self._pairs.popitem(last=False)
        return p

    def inliers(self, a: str, b: str) -> int:
        key = (a, b) if a <= b else (b, a)
        if key not in self._done:
            self._done[key] = match(self._get(key[0]), self._get(key[1]), enough=self.min_inliers).inliers
            if len(self._done) > self.answers:
                self._done.popitem(last=False)
        return self._done[key]

    def same(self, a: str, b: str) -> bool:
        return self.inliers(a, b) >= self.min_inliers


# --- the supervision checks ---------------------------------------------------------------------------------

def _face_erased(v: View) -> bool:
    """A face-erased reference: made by the eraser, or its edit carries a mask (the erased region)."""
    from mining.faces.pairs import ERASER

    return ERASER[0] in v.generators or (bool(v.masks) and v.masks[0] is not None)


def coherent_group(v: View, cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """series_generation / reference_generation: every input shows the target's subject and each other's
    (at least `group_min_inliers` inliers for every pair), else incoherent_group. A face-erased reference
    passes untested: its reference is an aligned face chip cut from another photo of the person, which shares
    no rigid geometry with the target; the identity is the face checks' to confirm."""
    if v.task == "reference_generation" and _face_erased(v):
        return None, {"geometric_applies": 0.0}
    images = [*v.inputs, v.target]
    ver = Verifier(lambda k: images[int(k)], cfg.group_min_inliers, cache=len(images))
    least = None
    t = str(len(images) - 1)
    # target first: the pairs a chained group most often fails
    order = [(str(i), t) for i in range(len(v.inputs))]
    order += [(str(i), str(j)) for i in range(len(v.inputs)) for j in range(i + 1, len(v.inputs))]
    for a, b in order:
        n = ver.inliers(a, b)
        least = n if least is None else min(least, n)
        if n < cfg.group_min_inliers:
            break
    least = 0 if least is None else least
    why = "incoherent_group" if least < cfg.group_min_inliers else None
    return why, {"group_min_inliers": float(least), "geometric_applies": 1.0}


def coherent_pair(v: View, cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """general_editing: the edit and the target show one subject (at least `group_min_inliers` inliers),
    else incoherent_pair."""
    if v.edit is None:
        return "incoherent_pair", {"pair_inliers": 0.0}
    ok, m = same_subject(v.edit, v.target, cfg.group_min_inliers)
    return (None if ok else "incoherent_pair"), {"pair_inliers": float(m.inliers)}
