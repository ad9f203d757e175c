import cv2
import numpy as np
import pytest
import skimage.data
from sklearn.datasets import load_sample_image

from mining.objects.smear import fill_ok, smear_scores
from mining.supervision import View
from mining.objects.verify import verify_removal
from schemas.config import SupervisionConfig, VerifyConfig


def _pasted(photo: np.ndarray, centre: tuple[int, int], axes: tuple[int, int], thing=skimage.data.coffee):
    """(the photo with a piece of `thing` (a coffee cup) pasted into an ellipse, the ellipse mask)."""
    mask = np.zeros(photo.shape[:2], np.uint8)
    cv2.ellipse(mask, centre, axes, 20, 0, 360, 1, -1)
    cup = cv2.resize(thing(), photo.shape[1::-1], interpolation=cv2.INTER_AREA)
    mask = mask.astype(bool)
    return np.where(mask[..., None], cup, photo), mask


def _photo(name: str) -> np.ndarray:
    img = load_sample_image("china.jpg") if name == "china" else getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    f = 320 / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)


CASES = [("grass", (160, 160), (45, 35)), ("china", (100, 190), (40, 30)), ("astronaut", (200, 250), (40, 30)),
         ("coffee", (230, 180), (35, 28))]


@pytest.mark.parametrize("name,centre,axes", CASES)
def test_a_diffusion_fill_of_a_large_hole_is_a_smear_and_the_true_background_is_not(name, centre, axes):
    photo = _photo(name)
    thing = skimage.data.chelsea if name == "coffee" else skimage.data.coffee
    source, mask = _pasted(photo, centre, axes, thing)
    cfg = VerifyConfig()
    for flag in (cv2.INPAINT_TELEA, cv2.INPAINT_NS):
        smeared = np.where(mask[..., None], cv2.inpaint(source, mask.astype(np.uint8) * 255, 5, flag), source)
        reason, scores = verify_removal(source, smeared, mask, cfg)
        assert reason == "smear" and scores["smear_ratio"] > cfg.max_smear_ratio, (name, flag, scores)
    reason, scores = verify_removal(source, photo, mask, cfg)  # removed by restoring the original photo
    assert reason is None and scores["smear_ratio"] < cfg.max_smear_ratio, (name, scores)


def test_a_hole_too_thin_to_smear_is_not_judged():
    photo = _photo("grass")
    mask = np.zeros(photo.shape[:2], bool)
    mask[100:108, 40:260] = True  # an 8 px line of text, say
    filled = np.where(mask[..., None], cv2.inpaint(photo, mask.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA), photo)
    assert smear_scores(filled, mask)["smear_ratio"] == 1.0


def test_fill_ok_judges_the_fill_of_a_removal_and_of_its_reverse_only():
    photo = _photo("grass")
    source, mask = _pasted(photo, (160, 160), (45, 35))
    smeared = np.where(mask[..., None], cv2.inpaint(source, mask.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA),
                       source)
    cfg = SupervisionConfig()

    def v(task, edit, target):
        return View(task=task, instruction="remove the cup", inputs=[edit], masks=[mask], target=target)

    why, scores = fill_ok(v("object_removal", source, smeared), cfg)
    assert why == "smear" and scores["smear_ratio"] > cfg.smear_max_ratio
    assert fill_ok(v("object_addition", smeared, source), cfg)[0] == "smear"  # the reverse: its edit is the fill
    assert fill_ok(v("object_removal", source, photo), cfg)[0] is None
    assert fill_ok(v("text_addition", photo, source), cfg)[0] is None
    assert fill_ok(v("inpainting", smeared, source), cfg) == (None, {})  # the target is a real photo: no fill
    no_mask = View(task="object_removal", instruction="", inputs=[source], masks=[None], target=smeared)
    assert fill_ok(no_mask, cfg) == (None, {})
