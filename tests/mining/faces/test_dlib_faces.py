import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFilter

from mining.faces.dlib_faces import (PINNED_SHA256, DlibFaces, FaceFilter, cosine_to_distance, face_region_mask,
                               model_file, pose)
from mining.faces.pairs import face_pairs


@pytest.fixture(scope="module")
def faces():
    f = DlibFaces()
    f.setup()
    return f


def _astronaut(side=160):
    return np.asarray(Image.fromarray(skimage.data.astronaut()).crop((100, 0, 340, 240)).resize((side, side)))


def _lfw(i):
    g = Image.fromarray((skimage.data.lfw_subset()[i] * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
    return np.pad(np.stack([np.asarray(g)] * 3, -1), ((30, 30), (30, 30), (0, 0)), mode="edge")


def test_detects_the_astronaut_with_landmarks_inside_the_box(faces):
    r = faces(skimage.data.astronaut())  # the full photo: the suit patch scores below min_score
    assert r.reason is None and len(r.detections) == 1
    l, t, rr, b = r.face.box
    assert 150 < (l + rr) / 2 < 290 and 50 < (t + b) / 2 < 190  # her face, not the suit
    lm = r.face.landmarks
    assert lm.shape == (5, 2) and ((lm[:, 0] >= l) & (lm[:, 0] <= rr) & (lm[:, 1] >= t) & (lm[:, 1] <= b)).all()
    assert r.face.chip.shape == (150, 150, 3) and abs(np.linalg.norm(r.face.descriptor) - 1) < 1e-5
    assert faces.version.startswith("dlib") and PINNED_SHA256 and "unloaded" not in faces.version


def test_same_face_jittered_is_closer_than_different_faces(faces):
    a = faces(_astronaut()).face
    jit = np.asarray(Image.fromarray(_astronaut(176)).crop((8, 4, 168, 164)))  # rescaled + shifted
    b = faces(jit).face
    c = faces(np.asarray(Image.fromarray(_lfw(5)).crop((20, 10, 140, 130)).resize((160, 160)))).face
    same, diff = float(a.descriptor @ b.descriptor), float(a.descriptor @ c.descriptor)
    assert same > diff
    assert cosine_to_distance(same, a.raw_norm, b.raw_norm) < 0.6 < cosine_to_distance(diff, a.raw_norm, c.raw_norm)


def test_single_face_filter_reasons(faces):
    assert faces(np.full((96, 96, 3), 128, np.uint8)).reason == "no_face"
    two = np.concatenate([_astronaut(), _astronaut()], axis=1)
    assert faces(two).reason == "many_faces"
    assert DlibFaces(filt=FaceFilter(min_face_px=100))(_astronaut()).reason == "too_small"
    soft = np.asarray(Image.fromarray(_astronaut()).filter(ImageFilter.GaussianBlur(1.5)))
    assert DlibFaces(filt=FaceFilter(min_sharpness=60))(soft).reason == "blurry"
    tilted = np.asarray(Image.fromarray(_astronaut()).rotate(15, resample=Image.BICUBIC))
    assert DlibFaces(filt=FaceFilter(max_roll_deg=5))(tilted).reason == "pose"
    with pytest.raises(ValueError, match="RGB uint8"):
        faces(np.zeros((10, 10), np.uint8))


def test_pose_from_five_points():
    level = np.array([[60, 50], [50, 50], [20, 50], [30, 50], [40, 70]], np.float32)
    assert pose(level) == pytest.approx((0.0, 0.0), abs=1e-6)
    roll, yaw = pose(np.array([[60, 60], [50, 55], [20, 40], [30, 45], [40, 70]], np.float32))
    assert roll == pytest.approx(np.degrees(np.arctan2(20, 40)), abs=0.01)
    turned = level.copy()
    turned[4, 0] = 55  # nose 15 px right of the eye midpoint, eye distance 30
    assert pose(turned)[1] == pytest.approx(0.5)


def test_model_file_refuses_a_wrong_checksum(tmp_path):
    (tmp_path / "dlib").mkdir()
    (tmp_path / "dlib" / "shape_predictor_5_face_landmarks.dat").write_bytes(b"not the model")
    with pytest.raises(ValueError, match="refusing"):
        model_file(tmp_path, "shape_predictor_5_face_landmarks.dat")


def test_face_region_mask_covers_box_and_landmarks(faces):
    img = _astronaut()
    f = faces(img).face
    m = face_region_mask(img.shape[:2], f, 0.25)
    l, t, r, b = f.box
    assert m[t:b, l:r].all() and 0.1 < m.mean() < 0.9


def test_face_pairs_aligned_misaligned_and_counts():
    rng = np.random.default_rng(0)
    a = rng.normal(size=128)
    a /= np.linalg.norm(a)
    def near(cos):
        o = rng.normal(size=128)
        o -= (o @ a) * a
        o /= np.linalg.norm(o)
        return cos * a + np.sqrt(1 - cos**2) * o
    far = rng.normal(size=128)
    x = np.stack([a, near(0.99), near(0.96), far / np.linalg.norm(far)]).astype(np.float32)
    lm = np.tile(np.array([[60, 50], [50, 50], [20, 50], [30, 50], [40, 70]], np.float32), (4, 1, 1))
    lm[2] += 40  # face 2: same person, other framing
    sizes = np.array([[100, 100]] * 4)
    fp = face_pairs(x, lm, sizes, band=(0.93, 0.98), aligned_min=0.9, max_shift=0.08, max_pairs_per_face=4,
                    max_pairs_per_set=10, seed=0)
    assert [(i, j) for i, j, _, _ in fp.aligned] == [(0, 1)]
    assert sorted((i, j) for i, j, _ in fp.misaligned) == [(0, 2), (1, 2)]
    a_c, m_c = fp.aligned_counts, fp.misaligned_counts
    assert a_c["candidates"] == a_c["samples"] + sum(a_c["dropped"].values()) == 3
    assert a_c["dropped"] == {"not_aligned": 2} and m_c["above_band"] == 1
    assert m_c["set_pairs"] == m_c["samples"] + sum(m_c["dropped"].values())
