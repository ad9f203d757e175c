"""Text confirmation on planted images: rendered English and Chinese on photos is confirmed; texture that the
OCR reads as text (the camera's tripod as '0000', brick as '11', the pagoda roof in china.jpg as 'ARAR' and
'ARSAAS', coins, a deep-field crop) is not."""

from collections import Counter

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont
from sklearn.datasets import load_sample_image

from mining.objects.inpaint import dilate
from mining.text.ocr import RapidOcrReader, boxes_mask, find_font
from mining.supervision import View
from mining.text.confirm import (Rules, character_reason, confirm_hits, fit_ned, named_text, read_confirmed,
                                 region, text_addition_ok, text_removal_ok)
from mining.instructions.text import TEMPLATES, text_instruction
from schemas.config import SupervisionConfig


@pytest.fixture(scope="module")
def ocr():
    r = RapidOcrReader(min_score=0.5, min_chars=2)  # the text stage's reader
    r.setup()
    return r


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])


def _photo(name: str, side: int = 384) -> np.ndarray:
    im = load_sample_image(f"{name}.jpg") if name in ("china", "flower") else _rgb(getattr(skimage.data, name)())
    h, w = im.shape[:2]
    return cv2.resize(im, (side, round(side * h / w)), interpolation=cv2.INTER_AREA)


def _draw(image: np.ndarray, text: str, script: str, xy: tuple[int, int], size: int = 34,
          fill=(255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    """(the image with `text` drawn, the mask of its pixels dilated as the text stage does)."""
    im = Image.fromarray(image)
    ImageDraw.Draw(im).text(xy, text, font=ImageFont.truetype(find_font(script), size), fill=fill,
                            stroke_width=1, stroke_fill=(0, 0, 0) if sum(fill) > 380 else (255, 255, 255))
    out = np.asarray(im)
    return out, dilate(np.any(out != image, -1), 4)


# a photo, the text drawn on it, its script, where
REAL = [("chelsea", "WELCOME HOME", "en", (30, 40)), ("coffee", "欢迎光临", "zh", (200, 30)),
        ("china", "Fresh Bakery", "en", (150, 200)), ("flower", "图书馆", "zh", (40, 180)),
        ("brick", "OPEN 24 HOURS", "en", (20, 300)), ("astronaut", "Museum", "en", (240, 320))]


def _textures() -> dict[str, np.ndarray]:
    """Text-free photos and crops in which the OCR reads text."""
    def rot(im):
        h, w = im.shape[:2]
        return cv2.warpAffine(im, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h))

    brick2 = cv2.resize(_rgb(skimage.data.brick()), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return {"camera_tripod": _rgb(skimage.data.camera()),
            "brick_x2_a": brick2[0:160, 432:592], "brick_x2_b": brick2[864:1024, 432:592],
            "brick": _rgb(skimage.data.brick())[176:336, 0:160],
            "china_roof_rotated": rot(load_sample_image("china.jpg")),
            "coins": _rgb(skimage.data.coins())[0:256, 0:256], "coins_rotated": rot(_rgb(skimage.data.coins())),
            "deep_field": _rgb(skimage.data.hubble_deep_field())[0:160, 420:580]}


def test_character_rules():
    for text, why in [("AAAA", "repeated_glyph"), ("0000", "repeated_glyph"), ("11", "repeated_glyph"),
                      ("ARAR", "repeated_unit"), ("2000", "low_diversity"), ("e, .", "symbols"),
                      ("A中", "mixed_script"), ("Hоtel", "mixed_script"), ("x", "too_short")]:  # Cyrillic о
        assert character_reason(text) == why, text
    for text in ("CAT CAFE", "欢迎光临", "LAB 42", "Fresh Bakery", "3D打印", "2024年", "No. 7"):
        assert character_reason(text) is None, text
    # a second read may join the neighbouring word; an empty or different one does not agree
    assert fit_ned("CAT", "CAT CAFE") == 0.0 and fit_ned("Cafe", "CAT CAFE") == 0.0
    assert fit_ned("ARSAAS", "") == 1.0 and fit_ned("HAPPY", "HPY") == pytest.approx(0.4)


def test_the_named_text_is_taken_from_every_template_and_from_curly_quotes():
    for task, kinds in TEMPLATES.items():
        for kind, options in kinds.items():
            for i, template in enumerate(options):
                got = named_text(template.format(image="{image}", content="say 'hi' now", position="top",
                                                 colour="red"))
                assert got == ("say 'hi' now" if "{content}" in template else None), template
    assert named_text(text_instruction("text_removal", "k", 0, "OPEN", "top")) in ("OPEN", None)
    assert named_text("Erase \u201cSALE 50%\u201d from the sign") == "SALE 50%"
    assert named_text("去掉\u300c欢迎光临\u300d") == "欢迎光临"
    assert named_text("Remove the caption") is None and named_text('Remove the "" mark') is None


def test_a_crop_region_keeps_a_margin_and_a_bounded_aspect():
    x0, y0, x1, y1 = region((10, 100, 310, 120))
    assert x0 < 10 and y0 < 100 and x1 > 310 and y1 > 120 and (x1 - x0) <= 3 * (y1 - y0) + 1


@pytest.mark.slow  # six photos, a first and a second read each (~8 s on 2 cores)
def test_rendered_english_and_chinese_on_photos_are_confirmed(ocr):
    kept = 0
    for name, text, script, xy in REAL:
        img, _ = _draw(_photo(name), text, script, xy)
        hits = [h for h in ocr(img) if h.box[:, 0].min() >= xy[0] - 12 and h.box[:, 1].min() >= xy[1] - 12]
        ok, why, _ = confirm_hits(ocr, img, hits, Rules())
        assert "".join("".join(h.text for h in ok).split()) == "".join(text.split()), (name, hits, why)
        kept += 1
    assert kept == len(REAL)


def test_texture_read_as_text_is_not_confirmed(ocr):
    found, reasons = 0, Counter()
    for name, img in _textures().items():
        hits = ocr(img)
        assert hits, name  # the OCR does read "text" in each of these
        found += len(hits)
        kept, why, _ = confirm_hits(ocr, img, hits, Rules())
        assert kept == [], (name, [(h.text, h.score) for h in kept])
        # without the score rule the characters and the second read still reject every one of them
        kept, why, _ = confirm_hits(ocr, img, hits, Rules(min_score=0.0))
        assert kept == [], (name, [(h.text, h.score) for h in kept])
        reasons.update(why)
    assert found >= 10 and reasons.get("repeated_glyph", 0) >= 3 and reasons.get("reread_mismatch", 0) >= 2, reasons


def _view(task, edit, target, mask, instruction):
    return View(task=task, instruction=instruction, inputs=[edit], masks=[mask], target=target)


CFG = SupervisionConfig()


@pytest.mark.slow  # three checks of about four OCR reads each (~5-10 s on 2 cores)
@pytest.mark.parametrize("name,text,script,xy", [REAL[0], REAL[1]])
def test_removal_and_addition_of_rendered_text_pass(name, text, script, xy):
    photo = _photo(name)
    with_text, mask = _draw(photo, text, script, xy)
    for removal in (text_instruction("text_removal", "a", 0, text, "top"),
                    "Delete all the text at the top of {image} and fill in the background."):  # names none
        why, s = text_removal_ok(_view("text_removal", with_text, photo, mask, removal), CFG)
        assert why is None, (removal, s)
    addition = text_instruction("text_addition", "a", 0, text, "top", "white")
    why, s = text_addition_ok(_view("text_addition", photo, with_text, mask, addition), CFG)
    assert why is None and s["text_named_ned"] <= CFG.text_max_ned, s


@pytest.mark.slow  # three checks (~8 s on 2 cores)
def test_a_removal_whose_target_still_has_text_or_names_other_text_fails():
    photo = _photo("chelsea")
    with_text, mask = _draw(photo, "WELCOME HOME", "en", (30, 40))
    still, _ = _draw(photo, "GOOD NIGHT", "en", (30, 40))
    v = _view("text_removal", with_text, still, mask, 'Remove the text "WELCOME HOME" from {image}.')
    why, s = text_removal_ok(v, CFG)
    assert why == "text_unconfirmed" and s["text_left"] >= 1, s
    v = _view("text_removal", with_text, photo, mask, 'Remove the text "SPRING SALE" from {image}.')
    assert text_removal_ok(v, CFG)[0] == "text_unconfirmed"
    v = _view("text_addition", photo, with_text, mask, 'Add the text "SPRING SALE" at the top of {image}.')
    assert text_addition_ok(v, CFG)[0] == "text_unconfirmed"


def test_removal_and_addition_of_texture_read_as_text_fail(ocr):
    img = _textures()["camera_tripod"]
    hits = ocr(img)
    assert hits
    mask = dilate(boxes_mask(hits, img.shape[:2]), 4)
    filled = cv2.inpaint(img, mask.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    content = " ".join(h.text for h in hits)
    why, s = text_removal_ok(_view("text_removal", img, filled, mask, f'Remove the text "{content}" from {{image}}.'),
                             CFG)
    assert why == "text_unconfirmed" and s["text_confirmed"] == 0, s
    why, s = text_addition_ok(_view("text_addition", filled, img, mask, f'Write "{content}" on the left of {{image}}.'),
                              CFG)
    assert why == "text_unconfirmed", s
    assert read_confirmed(img, mask, Rules.of(CFG))[0] == ""
