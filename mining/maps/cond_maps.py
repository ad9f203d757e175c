"""Condition maps of ACE App. B.2 for low-level analysis (image -> map) and controllable generation
(map -> image): segmentation, depth, pose, mosaic, degradation, grayscale, canny, contour, doodle, scribble.

Every map takes an RGB uint8 (H, W, 3) array and returns an RGB uint8 map of the same size; the random
ones draw only from the generator passed in. Classical maps are computed here; the segmentation map
colours a segmenter's regions, depth comes from mining/maps/depth.py, pose from a pose estimator's keypoints,
degradation from mining/image/degrade.py. Where the paper uses a learned annotator (HED/PiDiNet for scribble and
doodle, a line-art model for contour) this module has classical stand-ins, named as such in `MAPS` so
the lineage of each sample says which one made it.

`regional` puts a map inside a mask and leaves every pixel outside bit-identical to the source;
`multi_condition` gives each segment of an image a different map (ACE B.8.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

CLASSICAL = ("grayscale", "canny", "mosaic", "contour", "doodle", "scribble")
MODEL_MAPS = ("segmentation", "depth", "pose")
MAP_NAMES = ("segmentation", "depth", "pose", "mosaic", "degradation", "grayscale", "canny", "contour",
             "doodle", "scribble")


@dataclass(frozen=True)
class MapSpec:
    name: str  # the map (task suffix)
    generator: str  # what made it, for lineage
    version: str


MAPS: dict[str, MapSpec] = {
    "grayscale": MapSpec("grayscale", "grayscale-bt601", "1"),
    "canny": MapSpec("canny", "canny-cv2", "1"),
    "mosaic": MapSpec("mosaic", "mosaic-pixelate", "1"),
    "contour": MapSpec("contour", "contour-classical-isolines", "1"),
    "doodle": MapSpec("doodle", "doodle-classical-coarse-regions", "1"),
    "scribble": MapSpec("scribble", "scribble-classical-softedge", "1"),
    "segmentation": MapSpec("segmentation", "segmentation-region-colours", "1"),
}


def _check(img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"condition maps take an RGB uint8 (H, W, 3) array, got {img.dtype} {img.shape}")


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _gray(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def grayscale(img: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    _check(img)
    return _rgb(_gray(img))


def canny(img: np.ndarray, rng: np.random.Generator | None = None, low: int = 100, high: int = 200) -> np.ndarray:
    """White edges on black: cv2.Canny of the BT.601 luma."""
    import cv2

    _check(img)
    return _rgb(cv2.Canny(_gray(img), low, high))


def mosaic(img: np.ndarray, rng: np.random.Generator, block: tuple[float, float] = (0.02, 0.06)) -> np.ndarray:
    """Pixelation: blocks of a random side (a fraction of the shorter side), each its mean colour."""
    import cv2

    _check(img)
    h, w = img.shape[:2]
    b = max(2, round(min(h, w) * float(rng.uniform(*block))))
    small = cv2.resize(img, (max(1, -(-w // b)), max(1, -(-h // b))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def soft_edges(img: np.ndarray) -> np.ndarray:
    """A HED-like soft edge map in [0, 1]: gradient magnitude of the luma, averaged over three blur scales,
    each scale normalised by its own 99th percentile."""
    import cv2

    g = _gray(img).astype(np.float32) / 255.0
    acc = np.zeros_like(g)
    for sigma in (1.0, 2.0, 4.0):
        b = cv2.GaussianBlur(g, (0, 0), sigma)
        mag = cv2.magnitude(cv2.Sobel(b, cv2.CV_32F, 1, 0), cv2.Sobel(b, cv2.CV_32F, 0, 1))
        acc += mag / max(float(np.percentile(mag, 99)), 1e-6)
    return np.clip(acc / 3.0, 0.0, 1.0)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """True where a pixel's label differs from its right or lower neighbour."""
    b = np.zeros(labels.shape, bool)
    b[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    b[:-1, :] |= labels[1:, :] != labels[:-1, :]
    return b


def contour(img: np.ndarray, rng: np.random.Generator | None = None, levels: int = 6) -> np.ndarray:
    """Black iso-luminance lines on white: the smoothed luma cut into `levels` bands at its quantiles."""
    import cv2

    _check(img)
    g = cv2.GaussianBlur(_gray(img), (0, 0), max(1.0, min(img.shape[:2]) / 200))
    edges = np.unique(np.percentile(g, np.linspace(0, 100, levels + 1)[1:-1]))
    lines = _boundaries(np.digitize(g, edges))
    return _rgb(np.where(lines, 0, 255).astype(np.uint8))


def _thicken(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    if px <= 1:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (px, px))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


def _wobble(mask: np.ndarray, rng: np.random.Generator, amp: float) -> np.ndarray:
    """Displace a line mask by a smooth random field (hand-drawn wobble) of amplitude `amp` px."""
    import cv2

    h, w = mask.shape
    field = rng.normal(0, 1, (2, max(2, h // 32), max(2, w // 32))).astype(np.float32)
    dx, dy = (cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) * amp for f in field)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(mask.astype(np.uint8), xs + dx, ys + dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE) > 0


def scribble(img: np.ndarray, rng: np.random.Generator, edges: np.ndarray | None = None) -> np.ndarray:
    """White strokes on black: the strongest soft edges (top 8-14 %; `edges`: a model's soft edges, else
    the classical ones), thinned to one pixel and redrawn with a random pen width, a slight wobble and
    small fragments dropped."""
    import cv2
    from skimage.morphology import skeletonize

    _check(img)
    h, w = img.shape[:2]
    e = soft_edges(img) if edges is None else edges.astype(np.float32)
    strong = e >= np.percentile(e, 100 - float(rng.uniform(8, 14)))
    thin = skeletonize(strong)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(4, min(h, w) // 40)
    lines = _wobble(keep[lab], rng, amp=min(h, w) / 150)
    pen = max(1, round(min(h, w) / 128 * float(rng.uniform(1.0, 2.0))))
    return _rgb(np.where(_thicken(lines, pen), 255, 0).astype(np.uint8))


def doodle(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black rough outlines on white: boundaries of a coarse colour partition (a small, smoothed copy
    quantised into 3-5 luma bands), scaled back up, wobbled and drawn with a thick pen."""
    import cv2

    _check(img)
    h, w = img.shape[:2]
    f = min(1.0, 64 / max(h, w))
    small = cv2.resize(img, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA)
    g = cv2.medianBlur(_gray(small), 5)
    k = int(rng.integers(3, 6))
    labels = np.digitize(g, np.unique(np.percentile(g, np.linspace(0, 100, k + 1)[1:-1])))
    big = cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    lines = _wobble(_boundaries(big), rng, amp=min(h, w) / 60)
    pen = max(2, round(min(h, w) / 64))
    return _rgb(np.where(_thicken(lines, pen), 0, 255).astype(np.uint8))


def hed_doodle(edges: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black rough outlines on white from a model's soft edges (0-255): smoothed, the strong half kept,
    thinned, wobbled and drawn with a thick pen (a doodle keeps the main shapes, not the detail)."""
    import cv2
    from skimage.morphology import skeletonize

    h, w = edges.shape
    k = max(3, (min(h, w) // 48) | 1)
    strong = cv2.GaussianBlur(edges, (k, k), 0) >= 128
    lines = _wobble(skeletonize(strong), rng, amp=min(h, w) / 60)
    pen = max(2, round(min(h, w) / 64))
    return _rgb(np.where(_thicken(lines, pen), 0, 255).astype(np.uint8))


CLASSICAL_FNS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "grayscale": grayscale, "canny": canny, "mosaic": mosaic, "contour": contour, "doodle": doodle,
    "scribble": scribble,
}


def classical_map(name: str, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    try:
        fn = CLASSICAL_FNS[name]
    except KeyError:
        raise ValueError(f"no classical map {name!r}; classical maps: {', '.join(CLASSICAL_FNS)}") from None
    return fn(img, rng)


# segmentation ------------------------------------------------------------------------------------------

def label_map(masks: Sequence[np.ndarray], h: int, w: int) -> np.ndarray:
    """int32 (H, W): 1 + the index of the smallest region covering each pixel (larger regions are painted
    first, smaller ones over them); 0 where no region does."""
    out = np.zeros((h, w), np.int32)
    order = sorted(range(len(masks)), key=lambda i: (-int(masks[i].sum()), i))
    for i in order:
        if masks[i].shape != (h, w):
            raise ValueError(f"region {i} has shape {masks[i].shape}, the image is {(h, w)}")
        out[masks[i]] = i + 1
    return out


def palette(n: int) -> np.ndarray:
    """n + 1 distinct colours (uint8): black for label 0, then hues spaced by the golden ratio."""
    import colorsys

    cols = [(0, 0, 0)] + [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.6180339887) % 1, 0.65, 0.95))
                          for i in range(n)]
    return np.asarray(cols, np.uint8)


def segmentation(img: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """Each region in its own flat colour (labels compacted by area, largest first), black where none."""
    _check(img)
    return colour_labels(label_map(masks, *img.shape[:2]))


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """RGB uint8 of a label map: label 0 black, the others coloured in order of area, largest first."""
    present = [v for v in np.unique(labels) if v]
    present.sort(key=lambda v: -int((labels == v).sum()))
    remap = np.zeros(labels.max() + 1, np.int32)
    remap[present] = np.arange(1, len(present) + 1)
    return palette(len(present))[remap[labels]]


# regional and multi-condition ---------------------------------------------------------------------------

def regional(img: np.ndarray, cond: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The map inside `mask` (bool (H, W)), the source's pixels outside, bit for bit."""
    if cond.shape != img.shape or mask.shape != img.shape[:2]:
        raise ValueError(f"map {cond.shape} and mask {mask.shape} must match the image {img.shape}")
    out = img.copy()
    out[mask] = cond[mask]
    return out


def segment_groups(labels: np.ndarray, k: int) -> np.ndarray | None:
    """Partition the pixels into k groups of whole segments (0 counts as a segment), balancing area:
    each segment, largest first, joins the group with the least area. None when there are fewer than k
    segments. Returns int32 (H, W) in 0..k-1."""
    values, sizes = np.unique(labels, return_counts=True)
    if len(values) < k:
        return None
    group_of = np.zeros(int(values.max()) + 1, np.int32)
    area = np.zeros(k, np.int64)
    for v, s in sorted(zip(values.tolist(), sizes.tolist()), key=lambda t: (-t[1], t[0])):
        g = int(area.argmin())
        group_of[v] = g
        area[g] += s
    return group_of[labels]


def multi_condition(maps: Sequence[np.ndarray], groups: np.ndarray) -> np.ndarray:
    """One image from several maps of the same size: map i where `groups == i`."""
    out = np.zeros_like(maps[0])
    for i, m in enumerate(maps):
        sel = groups == i
        out[sel] = m[sel]
    return out


def random_region(labels: np.ndarray, rng: np.random.Generator, area: tuple[float, float],
                  box: bool = False, around: tuple[int, int] | None = None) -> np.ndarray | None:
    """A mask for a regional map: one segment whose area fraction is inside `area`, drawn at random; a
    random box of such an area when no segment qualifies or `box` asks for one (a segmentation map is one
    flat colour inside any one segment), centred near `around` (y, x) when given; None for an empty image."""
    h, w = labels.shape
    if h * w == 0:
        return None
    if not box and around is None:
        values, sizes = np.unique(labels, return_counts=True)
        frac = sizes / (h * w)
        ok = [v for v, f in zip(values.tolist(), frac.tolist()) if v and area[0] <= f <= area[1]]
        if ok:
            return labels == ok[int(rng.integers(len(ok)))]
    a = float(rng.uniform(*area))
    bh, bw = max(1, round(h * np.sqrt(a))), max(1, round(w * np.sqrt(a)))
    if around is None:
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    else:
        y0 = int(np.clip(around[0] - bh // 2 + rng.integers(-bh // 4, bh // 4 + 1), 0, h - bh))
        x0 = int(np.clip(around[1] - bw // 2 + rng.integers(-bw // 4, bw // 4 + 1), 0, w - bw))
    m = np.zeros((h, w), bool)
    m[y0:y0 + bh, x0:x0 + bw] = True
    return m
