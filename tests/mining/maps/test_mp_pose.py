import numpy as np
import pytest

from mining.maps.mp_pose import (ANCHORS, Detection, Roi, _roi_matrix, decode_detections, detection_roi, letterbox,
                            refine_with_heatmap, roi_crop, to_openpose18, weighted_nms)


def test_anchor_count_and_layout():
    # 28x28 and 14x14 maps with 2 anchors per location, then three stride-32 layers sharing a 7x7 map
    assert len(ANCHORS) == 28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6 == 2254
    np.testing.assert_allclose(ANCHORS[0], (0.5 / 28, 0.5 / 28))
    np.testing.assert_allclose(ANCHORS[2], (1.5 / 28, 0.5 / 28))
    np.testing.assert_allclose(ANCHORS[-1], (6.5 / 7, 6.5 / 7))


def test_letterbox_pads_the_short_side_evenly():
    img = np.full((50, 100, 3), 200, np.uint8)
    out, (left, top, right, bottom) = letterbox(img, 224)
    assert out.shape == (224, 224, 3) and left == right == 0 and top == pytest.approx(bottom, abs=1 / 224)
    assert top == pytest.approx(56 / 224) and out[0].max() == 0 and out[112].min() == 200


def test_decode_undoes_anchor_offsets_and_letterbox():
    raw = np.zeros((len(ANCHORS), 12), np.float32)
    logits = np.full(len(ANCHORS), -10.0, np.float32)
    k = 100
    logits[k] = 5.0
    raw[k, :4] = (11.2, -5.6, 44.8, 22.4)  # centre offset and size in 224-px input units
    raw[k, 4:6] = (22.4, 0.0)
    pad = (0.0, 0.25, 0.0, 0.25)  # a 2:1 landscape image letterboxed
    (det,) = decode_detections(raw, logits, pad, 0.5)
    cx, cy = ANCHORS[k] + (0.05, -0.025)
    cy = (cy - 0.25) / 0.5
    np.testing.assert_allclose(det.box, (cx - 0.1, cy - 0.1, cx + 0.1, cy + 0.1), atol=1e-5)
    np.testing.assert_allclose(det.keypoints[0], (ANCHORS[k][0] + 0.1, (ANCHORS[k][1] - 0.25) / 0.5), atol=1e-5)
    assert det.score == pytest.approx(1 / (1 + np.exp(-5.0)))
    with pytest.raises(ValueError, match="unexpected detector outputs"):
        decode_detections(raw[:10], logits[:10], pad, 0.5)


def test_weighted_nms_merges_overlaps_and_keeps_the_rest():
    kp = np.zeros((4, 2), np.float32)
    a = Detection(np.array([0.0, 0.0, 1.0, 1.0], np.float32), kp, 0.9)
    b = Detection(np.array([0.1, 0.0, 1.1, 1.0], np.float32), kp + 1, 0.3)
    far = Detection(np.array([5.0, 5.0, 6.0, 6.0], np.float32), kp, 0.5)
    out = weighted_nms([b, far, a])
    assert [d.score for d in out] == [0.9, 0.5]
    np.testing.assert_allclose(out[0].box[0], 0.3 * 0.1 / 1.2, atol=1e-6)
    np.testing.assert_allclose(out[0].keypoints, 0.25, atol=1e-6)
    assert weighted_nms([]) == []


def test_roi_is_upright_for_a_standing_person_and_turns_with_it():
    up = detection_roi(np.array([[0.5, 0.6], [0.5, 0.4], [0, 0], [0, 0]]), 200, 100)
    assert up.angle == pytest.approx(0.0) and (up.cx, up.cy) == (100.0, 60.0)
    assert up.side == pytest.approx(2 * 20 * 1.25)
    lying = detection_roi(np.array([[0.5, 0.5], [0.6, 0.5], [0, 0], [0, 0]]), 100, 100)
    assert lying.angle == pytest.approx(np.pi / 2)  # head to the right: turn a quarter clockwise


def test_crop_and_projection_agree():
    img = np.zeros((120, 160, 3), np.uint8)
    img[70:73, 100:103] = 255  # a dot centred at (101, 71)
    roi = Roi(cx=90.0, cy=60.0, side=80.0, angle=np.deg2rad(30))
    crop = roi_crop(img, roi, 64)
    ys, xs = np.nonzero(crop[..., 0] > 60)
    u, v = xs.mean() + 0.5, ys.mean() + 0.5
    x, y = _roi_matrix(roi, 64) @ (u, v, 1.0)
    assert abs(x - 101.5) < 1.5 and abs(y - 71.5) < 1.5


def test_heatmap_refinement_moves_only_confident_points():
    heat = np.full((64, 64, 2), -8.0, np.float32)
    heat[20, 30, 0] = 8.0  # a sharp peak near point 0
    xy = np.array([[32 / 64, 22 / 64], [10 / 64, 10 / 64]])
    out = refine_with_heatmap(xy, heat)
    assert out[0, 0] == pytest.approx(30 / 64, abs=0.01) and out[0, 1] == pytest.approx(20 / 64, abs=0.01)
    np.testing.assert_array_equal(out[1], xy[1])


def test_openpose18_mapping_follows_the_blazepose_topology():
    lm = np.zeros((33, 4), np.float32)
    lm[:, 0] = np.arange(33)  # x = BlazePose index
    lm[:, 2] = 1.0
    lm[12, 2] = 0.4
    p = to_openpose18(lm)
    # BlazePose: 0 nose, 2/5 left/right eye, 7/8 left/right ear, 11/12 left/right shoulder, 13/14 elbows,
    # 15/16 wrists, 23/24 hips, 25/26 knees, 27/28 ankles
    assert list(p[[0, 2, 3, 4, 5, 6, 7], 0]) == [0, 12, 14, 16, 11, 13, 15]
    assert list(p[8:, 0]) == [24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
    assert p[1, 0] == 11.5 and p[1, 2] == pytest.approx(0.4)
