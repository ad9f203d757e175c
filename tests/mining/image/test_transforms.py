import numpy as np
import pytest
from PIL import Image

from mining.image.transforms import TRANSFORMS, apply


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_is_seeded_and_describes_itself(name, photo):
    a = apply(name, photo, np.random.default_rng(5))
    b = apply(name, photo, np.random.default_rng(5))
    assert a.params == b.params and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert "{image}" in a.instruction
    assert not np.array_equal(np.asarray(a.image.resize(photo.size)), np.asarray(photo))


def test_crop_box_is_inside_and_matches_pixels(photo):
    t = apply("crop", photo, np.random.default_rng(1))
    x0, y0, x1, y1 = t.params["box"]
    assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90
    assert np.array_equal(np.asarray(t.image), np.asarray(photo)[y0:y1, x0:x1])


def test_unknown_transform(photo):
    with pytest.raises(ValueError, match="known: crop"):
        apply("swirl", photo, np.random.default_rng(0))
