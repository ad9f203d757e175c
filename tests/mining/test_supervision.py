"""The generic supervision checks on planted samples built from the shipped photos."""

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from mining.maps import cond_maps as cm
from mining.supervision import change, check, checks_for, colourfulness, map_content, map_has_content, view
from schemas.config import SupervisionConfig
from schemas.records import AceSample, ConditionUnit, Role

CFG = SupervisionConfig()


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _sample(task, edit, target, mask=None, refs=(), instruction="Do it to {image}."):
    units = [ConditionUnit(role=Role.EDIT, image=_png(edit), mask=None if mask is None else _png(
        (mask * 255).astype(np.uint8)))]
    units += [ConditionUnit(role=Role.REFERENCE, image=_png(r)) for r in refs]
    return AceSample(key=f"{task}-x", task=task, instruction=instruction, units=units,
                     target=ConditionUnit(role=Role.TARGET, image=_png(target)))


@pytest.fixture(scope="module")
def photo():
    return skimage.data.astronaut()[::2, ::2].copy()  # 256 x 256 RGB


@pytest.fixture(scope="module")
def grey_photo():
    g = skimage.data.camera()[::2, ::2]
    return np.stack([g] * 3, -1)


def test_identity_edit_is_no_change_and_a_real_map_passes(photo, grey_photo):
    grey_map = cm.grayscale(grey_photo)
    assert np.array_equal(grey_map, grey_photo)  # the finding: a grey source's grayscale map is itself
    why, scores = check(_sample("analysis_grayscale", grey_photo, grey_map), CFG)
    assert why == "already_grey" and scores["colourfulness"] == 0.0
    why, _ = check(_sample("control_grayscale", grey_map, grey_photo), CFG)
    assert why == "already_grey"
    why, scores = check(_sample("analysis_canny", grey_photo, grey_photo), CFG)  # any other task: no_change
    assert why == "no_change" and scores["change"] == 0.0
    why, scores = check(_sample("analysis_grayscale", photo, cm.grayscale(photo)), CFG)
    assert why is None and scores["colourfulness"] > 20


def test_a_nearly_grey_source_is_already_grey_though_its_map_differs(grey_photo):
    rng = np.random.default_rng(0)
    tinted = np.clip(grey_photo.astype(np.int16) + rng.integers(-3, 4, grey_photo.shape), 0, 255).astype(np.uint8)
    why, scores = check(_sample("analysis_grayscale", tinted, cm.grayscale(tinted)), CFG)
    assert why == "already_grey", scores
    assert change(tinted, cm.grayscale(tinted))[0] >= CFG.min_change  # no identity edit: grey all the same
    assert colourfulness(tinted) < CFG.min_colourfulness < colourfulness(skimage.data.coffee())


def test_change_is_measured_inside_the_mask(photo):
    mask = np.zeros(photo.shape[:2], bool)
    mask[100:140, 100:140] = True
    target = photo.copy()
    target[mask] = 255 - target[mask]  # a real change, but on 2.4 % of the image
    why, scores = check(_sample("inpainting", photo, target, mask), CFG)
    assert why is None and scores["change"] > 50
    why, _ = check(_sample("inpainting", photo, photo.copy(), mask), CFG)
    assert why == "no_change"


def test_a_series_target_that_repeats_an_input_is_no_change(photo):
    other = np.ascontiguousarray(photo[:, ::-1])
    s = AceSample(key="series_generation-x", task="series_generation", instruction="Continue the series.",
                  units=[ConditionUnit(role=Role.EDIT, image=_png(other)),
                         ConditionUnit(role=Role.REFERENCE, image=_png(photo)),
                         ConditionUnit(role=Role.REFERENCE, image=_png(other))],
                  target=ConditionUnit(role=Role.TARGET, image=_png(photo)))
    assert check(s, CFG)[0] == "no_change"


def test_a_segmentation_map_inside_one_segment_is_flat(photo):
    labels = np.zeros(photo.shape[:2], np.int32)
    labels[:, 128:] = 1
    labels[64:192, 32:96] = 2
    seg = cm.colour_labels(labels)
    one = labels == 2
    inside = cm.regional(photo, seg, one)
    why, scores = check(_sample("analysis_segmentation", photo, inside, one), CFG)
    assert why == "flat_region" and scores["map_content"] == 0.0
    why, _ = check(_sample("control_segmentation", inside, photo, one), CFG)
    assert why == "flat_region"
    box = np.zeros_like(one)
    box[40:200, 60:200] = True  # spans all three segments
    why, scores = check(_sample("analysis_segmentation", photo, cm.regional(photo, seg, box), box), CFG)
    assert why is None and scores["map_content"] > 0.2


def test_pose_needs_a_skeleton_in_its_region(photo):
    pose = np.zeros_like(photo)
    pose[20:60, 30:33] = (255, 0, 0)  # one limb, top left
    mask = np.zeros(photo.shape[:2], bool)
    mask[150:250, 150:250] = True  # far from it
    assert check(_sample("analysis_pose", photo, cm.regional(photo, pose, mask), mask), CFG)[0] == "flat_region"
    mask[:] = False
    mask[10:80, 10:80] = True
    assert check(_sample("analysis_pose", photo, cm.regional(photo, pose, mask), mask), CFG)[0] is None


def test_a_global_canny_map_of_a_flat_image_is_flat_and_of_a_photo_is_not(photo):
    flat = np.full_like(photo, 120)
    why, scores = check(_sample("control_canny", cm.canny(flat), flat), CFG)  # black map -> grey image: a change
    assert why == "flat_region" and scores["change"] > 100 and scores["map_content"] == 0.0
    why, scores = check(_sample("control_canny", cm.canny(photo), photo), CFG)
    assert why is None and scores["map_content"] > CFG.min_map_content["canny"]


def test_degradation_and_depth_are_not_judged_as_drawn_maps():
    names = {f.__name__ for f in checks_for("analysis_degradation")}
    assert "map_has_content" not in names and "no_change" in names
    assert "map_has_content" in {f.__name__ for f in checks_for("control_depth")}
    assert "has_colour" in {f.__name__ for f in checks_for("control_grayscale")}
    assert "map_has_content" not in {f.__name__ for f in checks_for("control_grayscale")}


def test_map_content_counts_the_share_off_the_mode():
    m = np.zeros((10, 10, 3), np.uint8)
    m[0, :5] = 255
    assert map_content(m) == pytest.approx(0.05)
    v = view(_sample("analysis_canny", m, m))
    assert map_has_content(v, SupervisionConfig(min_map_content={"default": 0.1}))[0] == "flat_region"


def test_a_reference_changed_only_locally_still_differs_but_a_noisy_copy_does_not(photo):
    rng = np.random.default_rng(1)
    earlier = photo.copy()
    patch = earlier[100:130, 100:130].astype(np.int16)
    earlier[100:130, 100:130] = np.clip(patch + 40, 0, 255)  # what an earlier turn still shows: 1.4 % of the pixels
    copy = np.clip(photo.astype(np.int16) + rng.integers(-1, 2, photo.shape), 0, 255).astype(np.uint8)
    edit = np.ascontiguousarray(photo[::-1])
    ok = AceSample(key="long_context-x", task="long_context", instruction="Turn 2 on {image2}.",
                   units=[ConditionUnit(role=Role.REFERENCE, image=_png(earlier)),
                          ConditionUnit(role=Role.EDIT, image=_png(edit))],
                   target=ConditionUnit(role=Role.TARGET, image=_png(photo)))
    why, scores = check(ok, CFG)
    assert why is None and scores["change"] < CFG.min_change <= 255 and scores["changed_share"] > CFG.min_changed_share, scores
    bad = ok.model_copy(update={"units": [ConditionUnit(role=Role.REFERENCE, image=_png(copy)), ok.units[1]]})
    assert check(bad, CFG)[0] == "no_change"


def test_the_edit_is_found_by_role_and_its_mask_applies_to_it_only(photo):
    """A chain lists its earlier turns first: the mask belongs to the edit unit, wherever it stands."""
    mask = np.zeros(photo.shape[:2], bool)
    mask[100:140, 100:140] = True
    target = photo.copy()
    target[mask] = 255 - target[mask]
    earlier = np.ascontiguousarray(photo[::-1])
    s = AceSample(key="long_context-y", task="long_context", instruction="Now {image2}.",
                  units=[ConditionUnit(role=Role.REFERENCE, image=_png(earlier)),
                         ConditionUnit(role=Role.EDIT, image=_png(photo), mask=_png((mask * 255).astype(np.uint8)))],
                  target=ConditionUnit(role=Role.TARGET, image=_png(target)))
    v = view(s)
    assert v.edit_at == 1 and v.mask is not None and v.mask.sum() == mask.sum()
    why, scores = check(s, CFG)
    assert why is None and scores["changed_share"] > 0.9  # inside the edit's mask nearly every pixel changed
    same = s.model_copy(update={"target": ConditionUnit(role=Role.TARGET, image=_png(photo))})
    assert check(same, CFG)[0] == "no_change"


def test_a_check_that_returns_an_unknown_reason_is_an_error(photo, monkeypatch):
    from mining import supervision

    monkeypatch.setitem(supervision.CHECKS, "inpainting", [lambda v, cfg: ("looks_odd", {})])
    with pytest.raises(ValueError, match="looks_odd"):
        check(_sample("inpainting", photo, np.ascontiguousarray(photo[::-1])), CFG)
