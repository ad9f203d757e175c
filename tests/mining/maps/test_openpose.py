import numpy as np
import pytest

from mining.maps.openpose import OPENPOSE_COLORS, OPENPOSE_LIMBS, draw_openpose


def _person(scale=1.0):
    p = np.zeros((18, 3), np.float32)
    pts = {0: (64, 20), 1: (64, 40), 2: (44, 40), 3: (40, 60), 4: (38, 80), 5: (84, 40), 6: (88, 60),
           7: (90, 80), 8: (54, 80), 9: (54, 100), 10: (54, 120), 11: (74, 80), 12: (74, 100), 13: (74, 120)}
    for j, (x, y) in pts.items():
        p[j] = (x * scale, y * scale, 1.0)
    return p


def test_joints_and_limbs_in_their_colours():
    p = _person()
    out = draw_openpose(128, 128, [p])
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert tuple(out[20, 64]) == OPENPOSE_COLORS[0]  # the nose joint
    limb = OPENPOSE_LIMBS.index((9, 10))  # right knee -> right ankle, a vertical limb at x = 54
    assert tuple(out[110, 54]) == tuple(int(c * 0.6) for c in OPENPOSE_COLORS[limb])
    assert out[5, 5].max() == 0 and out[64, 64].max() == 0  # background stays black


def test_low_confidence_joints_and_their_limbs_are_left_out():
    p = _person()
    p[10, 2] = 0.1  # right ankle
    out = draw_openpose(128, 128, [p])
    assert out[120, 54].max() == 0 and out[110, 54].max() == 0
    assert out[100, 54].max() > 0


def test_stroke_width_scales_with_the_image():
    small = (draw_openpose(512, 512, [_person(4.0)]).max(axis=2) > 0).mean()
    large = (draw_openpose(1024, 1024, [_person(8.0)]).max(axis=2) > 0).mean()
    # the same pose 2x larger covers about the same fraction; fixed-width strokes would cover about half
    assert 0.7 * small < large < 1.3 * small


def test_empty_and_bad_input():
    assert draw_openpose(32, 48, []).shape == (32, 48, 3) and draw_openpose(32, 48, []).max() == 0
    with pytest.raises(ValueError, match=r"\(18, 3\)"):
        draw_openpose(32, 32, [np.zeros((17, 3))])
    with pytest.raises(ValueError, match="positive"):
        draw_openpose(0, 32, [])
