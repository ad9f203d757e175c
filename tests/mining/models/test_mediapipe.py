"""MediaPipe's tflite models (taken out of the mediapipe 0.10.21 wheel) on real photographs.

The models come from `<repo>/models/mediapipe` (or ACEFORGE_MODELS) when already fetched, else they are fetched
into a temporary folder (pip download; ACEFORGE_MEDIAPIPE_WHEEL may name a local wheel instead). When neither
works the tests fail with the fetch command: these tests are the check that the real models run.
"""

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from mining.models.embedders import MissingModelError
from mining.models.mediapipe import (MP_FILES, PoseEstimator, SelfieSegmenter, check_files, fetch, mediapipe_dir,
                              person_region)
from mining.objects.segment import ChecksumError

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def astronaut_face():
    """The photo and its face box (left, top, right, bottom) from dlib's HOG detector, a model of its own."""
    import dlib

    img = data.astronaut()
    faces = dlib.get_frontal_face_detector()(img, 0)
    assert len(faces) == 1
    f = faces[0]
    return img, (f.left(), f.top(), f.right(), f.bottom())


def _inside(pt, box):
    return box[0] <= pt[0] <= box[2] and box[1] <= pt[1] <= box[3]


def test_selfie_mask_covers_the_person_not_the_background(mp_models, astronaut_face):
    img, (l, t, r, b) = astronaut_face
    prob = SelfieSegmenter(mp_models)(img)
    assert prob.dtype == np.float32 and prob.shape == img.shape[:2]
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert prob[t:b, l:r].mean() > 0.8  # the face
    assert prob[:40, :40].mean() < 0.1 and prob[:40, -40:].mean() < 0.1  # the flag, the wall by the shuttle
    region = person_region(prob)
    assert region is not None and region.mask.shape == img.shape[:2] and region.mask[(t + b) // 2, (l + r) // 2]
    assert 0.5 < region.score <= 1.0


def test_selfie_keeps_the_source_size_of_a_small_non_square_image(mp_models):
    import cv2

    img = cv2.resize(data.astronaut(), (100, 160), interpolation=cv2.INTER_AREA)
    assert SelfieSegmenter(mp_models)(img).shape == (160, 100)


def test_pose_places_face_and_shoulders(mp_models, astronaut_face):
    img, box = astronaut_face
    people = PoseEstimator(mp_models)(img)
    assert len(people) == 1 and people[0].shape == (18, 3) and people[0].dtype == np.float32
    p = people[0]
    nose, neck, r_sh, l_sh, r_eye, l_eye = p[0], p[1], p[2], p[5], p[14], p[15]
    assert _inside(nose, box) and _inside(r_eye, box) and _inside(l_eye, box)
    assert min(nose[2], r_sh[2], l_sh[2]) > 0.5
    assert r_sh[1] > box[3] and l_sh[1] > box[3]  # shoulders below the chin
    assert r_sh[0] < nose[0] < l_sh[0]  # facing the camera: her right shoulder is on the image's left
    assert r_eye[0] < l_eye[0] and r_eye[1] < nose[1]
    np.testing.assert_allclose(neck[:2], (r_sh[:2] + l_sh[:2]) / 2, atol=1e-3)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pose_follows_a_rotated_person(mp_models, astronaut_face, k):
    img, (l, t, r, b) = astronaut_face
    h, w = img.shape[:2]
    rot = np.ascontiguousarray(np.rot90(img, k))
    corners = np.array([[l, t], [r, t], [l, b], [r, b]], float)
    for _ in range(k):  # np.rot90 turns counter-clockwise: (x, y) -> (y, W - 1 - x)
        corners = np.column_stack([corners[:, 1], w - 1 - corners[:, 0]])
        h, w = w, h
    box = (*corners.min(0), *corners.max(0))
    people = PoseEstimator(mp_models)(rot)
    assert len(people) == 1 and _inside(people[0][0], box)


def test_no_person_on_a_texture(mp_models):
    brick = np.ascontiguousarray(np.repeat(data.brick()[:160, :160, None], 3, axis=2))
    assert PoseEstimator(mp_models)(brick) == []
    prob = SelfieSegmenter(mp_models)(brick)
    assert prob.mean() < 0.05 and person_region(prob) is None


def test_deterministic_and_lineage_names(mp_models, astronaut_face):
    img, _ = astronaut_face
    pose, seg = PoseEstimator(mp_models), SelfieSegmenter(mp_models)
    np.testing.assert_array_equal(pose(img)[0], pose(img)[0])
    np.testing.assert_array_equal(seg(img), seg(img))
    assert pose.name == "mediapipe-blazepose-full" and seg.name == "mediapipe-selfie-segmentation"
    assert pose.version.startswith("0.10.21/") and seg.version.startswith("0.10.21/")
    assert pose.resources().cpus >= 1 and seg.resources().gpus == 0


def test_bad_input_is_a_clear_error(mp_models):
    with pytest.raises(ValueError, match="RGB uint8"):
        SelfieSegmenter(mp_models)(data.camera())
    with pytest.raises(ValueError, match="RGB uint8"):
        PoseEstimator(mp_models)(data.astronaut().astype(np.float32))


def test_missing_file_names_the_fetch_command(tmp_path):
    with pytest.raises(MissingModelError, match=r"python -m mining\.models\.mediapipe fetch --models"):
        PoseEstimator(tmp_path).setup()
    with pytest.raises(MissingModelError, match="selfie_segmentation.tflite"):
        SelfieSegmenter(tmp_path)(data.astronaut())


def test_checksum_mismatch_refuses_to_load(mp_models, tmp_path):
    shutil.copytree(mediapipe_dir(mp_models), mediapipe_dir(tmp_path))
    target = mediapipe_dir(tmp_path) / "selfie_segmentation.tflite"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="sha256 .* not the pinned"):
        SelfieSegmenter(tmp_path).setup()
    PoseEstimator(tmp_path).setup()  # the pose files are intact


def test_fetch_is_idempotent_and_repairs(mp_models, tmp_path):
    assert fetch(mp_models) == []  # present and valid: nothing downloaded or written
    shutil.copytree(mediapipe_dir(mp_models), mediapipe_dir(tmp_path))
    (mediapipe_dir(tmp_path) / "pose_detection.tflite").write_bytes(b"truncated")
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        member = MP_FILES["pose_detection.tflite"][0]
        zf.write(mediapipe_dir(mp_models) / "pose_detection.tflite", member)
    assert fetch(tmp_path, wheel) == [mediapipe_dir(tmp_path) / "pose_detection.tflite"]
    check_files(tmp_path)
    assert not list(mediapipe_dir(tmp_path).glob(".*.part"))


def test_fetch_rejects_a_wheel_with_other_bytes(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, _ in MP_FILES.values():
            zf.writestr(member, b"not a model")
    with pytest.raises(ChecksumError, match="not the pinned"):
        fetch(tmp_path / "models", wheel)
    assert not any((mediapipe_dir(tmp_path / "models")).glob("*.tflite"))
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mediapipe/__init__.py", "")
    with pytest.raises(ValueError, match="no mediapipe/modules"):
        fetch(tmp_path / "models", wheel)


def test_person_segmenter_speaks_the_segmenter_protocol(mp_models, astronaut_face):
    from mining.models.mediapipe import PersonSegmenter

    img, (l, t, r, b) = astronaut_face
    seg = PersonSegmenter(mp_models)
    (region,) = seg(img)
    assert region.mask.dtype == bool and region.mask[t:b, l:r].mean() > 0.8 and not region.mask[:20, :20].any()
    assert seg(np.ascontiguousarray(np.repeat(data.brick()[:96, :96, None], 3, axis=2))) == []
    assert seg.name == "mediapipe-selfie-segmentation" and seg.version == SelfieSegmenter(mp_models).version
