import cv2
import numpy as np
import skimage.data
from skimage.segmentation import felzenszwalb

from mining.objects.mask_filters import filter_masks
from mining.objects.objectness import ObjectnessMaps, objectness
from mining.objects.segment import Region
from schemas.config import MaskFilterConfig


def _grass() -> np.ndarray:
    return np.repeat(skimage.data.grass()[:320, :320, None], 3, -1)


def _grass_blobs(img: np.ndarray) -> list[np.ndarray]:
    """The graph-based segmenter's pieces of the grass texture that pass the size filters."""
    seg = felzenszwalb(img, scale=400, sigma=0.8, min_size=200)
    blobs = [seg == k for k in range(seg.max() + 1)]
    return [b for b in blobs if 0.01 <= b.mean() <= 0.25]


def _cup_on_cat() -> tuple[np.ndarray, np.ndarray]:
    """chelsea with the coffee photo's cup pasted into a disc, and the disc."""
    cat = cv2.resize(skimage.data.chelsea(), (320, 212), interpolation=cv2.INTER_AREA)
    cup = cv2.resize(skimage.data.coffee(), (320, 212), interpolation=cv2.INTER_AREA)
    disc = np.zeros(cat.shape[:2], np.uint8)
    cv2.circle(disc, (120, 100), 40, 1, -1)
    disc = disc.astype(bool)
    return np.where(disc[..., None], cup, cat), disc


def test_a_piece_of_grass_texture_scores_low_and_a_pasted_object_high():
    grass = _grass()
    blobs = _grass_blobs(grass)
    assert len(blobs) >= 3
    maps = ObjectnessMaps.of(grass)
    floor = MaskFilterConfig().min_objectness
    assert max(objectness(maps, b)["objectness"] for b in blobs) < floor
    img, disc = _cup_on_cat()
    s = objectness(ObjectnessMaps.of(img), disc)
    assert s["objectness"] > 2 * floor and s["obj_edge"] > 2 and s["obj_solidity"] > 0.95
    assert objectness(ObjectnessMaps.of(img), np.zeros_like(disc))["objectness"] == 0.0


def test_filter_masks_drops_regions_that_are_not_objects_with_their_reason():
    grass = _grass()
    blobs = _grass_blobs(grass)
    cfg = MaskFilterConfig(max_border_frac=1.0, min_box_fill=0.0, max_aspect=100.0)
    res = filter_masks([Region(b, 0.5) for b in blobs], cfg, grass)
    assert res.drops == {"not_object": len(blobs)} and not res.kept
    assert all(st.objectness is not None and st.objectness < cfg.min_objectness for _, st, _ in res.dropped)
    img, disc = _cup_on_cat()
    res = filter_masks([Region(disc, 0.9)], cfg, img)
    assert len(res.kept) == 1 and res.kept[0][1].objectness >= cfg.min_objectness
    res = filter_masks([Region(b, 0.5) for b in blobs], cfg)  # no image: not computed
    assert len(res.kept) + res.drops.get("overlap", 0) == len(blobs) and "not_object" not in res.drops
    assert all(st.objectness is None for _, st in res.kept)
