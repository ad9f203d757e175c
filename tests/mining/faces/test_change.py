"""Aligned face pairs: the identity margin (upstream drop and packed-sample check) and the instruction naming
the change that was made (a colour cast over the photo, or the face)."""

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFilter

from mining.faces.change import change_instruction, change_kind
from mining.faces.pairs import face_pair_ok, face_pairs
from mining.supervision import View
from schemas.config import FaceConfig, SupervisionConfig
from stages.corpus.demo_corpus import FACE_EDITS

AT = FaceConfig().aligned_min
MARGIN = SupervisionConfig().face_margin


def _pair(cos: float) -> np.ndarray:
    return np.array([[1.0, 0.0], [cos, np.sqrt(1 - cos * cos)]], np.float32) @ np.eye(2, 128, dtype=np.float32)


@pytest.mark.parametrize("cos, kept", [(AT + MARGIN - 0.002, False), (AT + MARGIN + 0.002, True),
                                       (AT + 0.001, False)])
def test_an_aligned_pair_needs_the_margin_above_the_identity_threshold(cos, kept):
    lms = np.zeros((2, 5, 2), np.float32)
    fp = face_pairs(_pair(cos), lms, np.array([[100, 100]] * 2), band=(0.933, 0.982), aligned_min=AT,
                    max_shift=0.02, max_pairs_per_face=4, max_pairs_per_set=50, seed=0, margin=MARGIN)
    c = fp.aligned_counts
    assert c["candidates"] == 1 == c["samples"] + sum(c["dropped"].values())
    assert len(fp.aligned) == int(kept) and c["dropped"].get("face_margin", 0) == int(not kept)


def _view(scores):
    im = np.zeros((8, 8, 3), np.uint8)
    return View(task="facial_editing", instruction="", inputs=[im], masks=[None], target=im + 9, scores=scores)


def test_face_pair_check_reads_the_lineage_cosine_and_threshold():
    cfg = SupervisionConfig()
    assert face_pair_ok(_view({"face_cosine": 0.904, "face_threshold": 0.903}), cfg)[0] == "face_margin"
    assert face_pair_ok(_view({"face_cosine": AT + MARGIN + 0.001, "face_threshold": AT}), cfg)[0] is None
    assert face_pair_ok(_view({"face_cosine": 0.95, "face_threshold": 0.945}), cfg)[0] == "face_margin"
    assert face_pair_ok(_view({"face_cosine": 0.904}), cfg)[0] == "face_margin"  # an old set: default threshold
    assert face_pair_ok(_view({}), cfg)[0] == "face_margin"


@pytest.fixture(scope="module")
def face():
    """The astronaut's head (160 px) and a mask of her face region."""
    im = Image.fromarray(skimage.data.astronaut()).crop((100, 0, 340, 240)).resize((160, 160), Image.LANCZOS)
    mask = np.zeros((160, 160), bool)
    mask[35:115, 45:115] = True
    return im, mask


def test_a_colour_cast_is_named_as_one_and_not_as_a_face_edit(face):
    im, mask = face
    a = np.asarray(im)
    for edit, want in (("warm", "warmer"), ("grey", "grey")):
        kind, scores = change_kind(a, np.asarray(FACE_EDITS[edit](im)), mask)
        assert kind == want and scores["change_global_share"] > 0.75, (edit, scores)
        text = change_instruction(kind, "k", 0)
        assert "face" not in text.lower() and "{image}" in text
    assert change_kind(a, np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8), mask)[0] == "brighter"
    assert change_kind(np.asarray(FACE_EDITS["grey"](im)), a, mask)[0] == "colourise"


def test_a_change_inside_the_face_region_is_a_face_edit(face):
    im, mask = face
    a = np.asarray(im)
    b = a.copy()
    blurred = np.asarray(im.filter(ImageFilter.GaussianBlur(4)))
    b[mask] = blurred[mask]  # a retouch of the face only
    kind, scores = change_kind(a, b, mask)
    assert kind == "face" and scores["change_face_resid"] > 2 * scores["change_rest_resid"], scores
    assert change_instruction(kind, "k", 0) is None  # the face templates apply
    b = blurred  # the same retouch over the whole photo
    assert change_kind(a, b, mask)[0] == "photo"


def test_a_whole_photo_change_is_named_by_its_measured_direction_or_dropped_unnamed(face):
    from mining.faces.change import UNNAMED

    im, mask = face
    a = np.asarray(im)
    shifted = np.roll(a, 3, axis=1)  # a reframing no colour map explains, no colour direction
    assert change_kind(a, shifted, mask)[0] == UNNAMED and change_instruction(UNNAMED, "k", 0) is None
    hsv = np.asarray(Image.fromarray(shifted).convert("HSV")).astype(np.int16)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2 + 20, 0, 255)
    vivid = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))
    kind, scores = change_kind(a, vivid, mask)
    assert kind == "vivid" and scores["change_sat_after"] > 1.3 * scores["change_sat_before"], scores
    assert "vivid" in change_instruction(kind, "k", 0)
    assert change_kind(vivid, a, mask)[0] == "muted"
