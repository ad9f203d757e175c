import cv2
import numpy as np
import pytest
import skimage.data

from mining.maps import cond_maps as cm

NAMES = ("grayscale", "canny", "mosaic", "contour", "doodle", "scribble")


@pytest.fixture(scope="module")
def img():
    return np.ascontiguousarray(cv2.resize(skimage.data.chelsea(), (120, 80), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("name", NAMES)
def test_every_map_is_rgb_uint8_of_the_source_size_and_seeded(img, name):
    a = cm.classical_map(name, img, np.random.default_rng(3))
    b = cm.classical_map(name, img, np.random.default_rng(3))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, img) and a.std() > 0  # a map, not the image and not a flat field


@pytest.mark.parametrize("name", ("mosaic", "doodle", "scribble"))
def test_random_maps_change_with_the_seed(img, name):
    outs = {cm.classical_map(name, img, np.random.default_rng(s)).tobytes() for s in range(4)}
    assert len(outs) > 1


def test_canny_equals_cv2_canny_on_the_luma(img):
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    out = cm.canny(img, low=50, high=150)
    assert np.array_equal(out[..., 0], cv2.Canny(gray, 50, 150))
    assert np.array_equal(out[..., 0], out[..., 2])


def test_grayscale_is_gray_and_follows_the_luma(img):
    g = cm.grayscale(img)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    luma = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    assert np.abs(g[..., 0] - luma).max() <= 1


def test_mosaic_is_made_of_flat_blocks(img):
    m = cm.mosaic(img, np.random.default_rng(0), block=(0.1, 0.1))  # 8 px blocks on an 80 px side
    assert (m[:8, :8] == m[0, 0]).all() and (m[8:16, 8:16] == m[8, 8]).all()
    assert not (m[:8, :8] == m[8, 8]).all()


def test_line_maps_are_binary(img):
    for name in ("contour", "doodle", "scribble"):
        vals = np.unique(cm.classical_map(name, img, np.random.default_rng(0)))
        assert set(vals.tolist()) <= {0, 255}, name


def test_regional_keeps_the_outside_bit_identical(img):
    cond = cm.canny(img)
    mask = np.zeros(img.shape[:2], bool)
    mask[10:50, 20:90] = True
    out = cm.regional(img, cond, mask)
    assert np.array_equal(out[~mask], img[~mask]) and np.array_equal(out[mask], cond[mask])
    with pytest.raises(ValueError):
        cm.regional(img, cond[:10], mask)


def test_segmentation_colours_each_region_and_leaves_uncovered_black():
    img = np.zeros((40, 60, 3), np.uint8)
    big = np.zeros((40, 60), bool)
    big[:, :30] = True
    small = np.zeros((40, 60), bool)
    small[5:15, 5:15] = True  # inside big: painted over it
    seg = cm.segmentation(img, [small, big])
    assert seg.shape == img.shape
    assert (seg[:, 30:] == 0).all()
    c_small, c_big = seg[10, 10], seg[30, 20]
    assert c_small.any() and c_big.any() and not np.array_equal(c_small, c_big)
    assert (seg[5:15, 5:15] == c_small).all()


def test_segment_groups_partition_whole_segments():
    labels = np.repeat(np.arange(6), 10)[None, :].repeat(4, 0)  # six stripes
    g = cm.segment_groups(labels, 3)
    assert g.shape == labels.shape and set(np.unique(g).tolist()) == {0, 1, 2}
    for v in range(6):  # a segment is never split between groups
        assert len(np.unique(g[labels == v])) == 1
    assert cm.segment_groups(labels, 7) is None


def test_multi_condition_takes_each_map_in_its_group(img):
    maps = [cm.canny(img), cm.grayscale(img)]
    groups = np.zeros(img.shape[:2], np.int32)
    groups[:, 60:] = 1
    out = cm.multi_condition(maps, groups)
    assert np.array_equal(out[:, :60], maps[0][:, :60]) and np.array_equal(out[:, 60:], maps[1][:, 60:])


def test_random_region_respects_the_area_range():
    labels = np.zeros((50, 50), np.int32)
    labels[:25] = 1  # 50 %
    m = cm.random_region(labels, np.random.default_rng(0), (0.3, 0.6))
    assert np.array_equal(m, labels == 1)
    box = cm.random_region(np.zeros((50, 50), np.int32), np.random.default_rng(0), (0.2, 0.3))
    assert 0.15 <= box.mean() <= 0.35  # no segment qualifies: a box of that area


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="RGB uint8"):
        cm.canny(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="no classical map"):
        cm.classical_map("hed", np.zeros((8, 8, 3), np.uint8), np.random.default_rng(0))
