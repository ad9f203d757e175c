import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mining.text import ocr as ocr_mod
from mining.models.embedders import MissingModelError
from mining.text.ocr import (MissingFontError, RapidOcrReader, boxes_mask, find_font, make_ocr,
                        normalized_edit_distance)
from mining.text.render import COLOURS, render_text


@pytest.fixture(scope="module")
def reader():
    r = RapidOcrReader()
    r.setup()
    return r


def _card(text: str, script: str, size=(200, 64)) -> np.ndarray:
    im = Image.new("RGB", size, (90, 120, 160))
    ImageDraw.Draw(im).text((8, 14), text, font=ImageFont.truetype(find_font(script), 24), fill=(255, 255, 255))
    return np.asarray(im)


@pytest.mark.parametrize("text,script", [("Hello World", "en"), ("深度学习", "zh")])
def test_rapidocr_reads_back_rendered_english_and_chinese(reader, text, script):
    hits = reader(_card(text, script))
    assert normalized_edit_distance("".join(h.text for h in hits), text) <= 0.1
    box = hits[0].box
    assert box.shape == (4, 2) and 0 <= box[:, 0].min() < 60 and 0 < hits[0].score <= 1


def test_a_blank_image_has_no_text_and_the_lineage_names_the_models(reader):
    assert reader(np.full((64, 96, 3), 128, np.uint8)) == []
    assert reader.name == "rapidocr-ppocrv6" and "PP-OCRv6_det_small.onnx" in reader.version


@pytest.mark.parametrize("script", ["en", "zh"])
def test_rendered_text_is_read_back_and_only_the_mask_changed(reader, script):
    base = np.asarray(Image.new("RGB", (160, 120), (70, 110, 60)))
    out, changed, info = render_text(base, script, np.random.default_rng(3))
    assert np.array_equal(out[~changed], base[~changed]) and changed.any()
    x0, y0, x1, y1 = info.box
    assert changed[y0:y1, x0:x1].sum() == changed.sum()  # every changed pixel inside the recorded box
    assert info.colour in COLOURS and info.size >= 14 and info.script == script
    read = "".join(h.text for h in reader(out))
    assert normalized_edit_distance(read, info.content) <= 0.1, (read, info)


def test_rendering_is_seeded():
    base = np.zeros((96, 128, 3), np.uint8)
    a = render_text(base, "en", np.random.default_rng(5))
    b = render_text(base, "en", np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]


def test_normalized_edit_distance():
    assert normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert normalized_edit_distance("Hello World", "hello world") == 0.0  # case and spaces ignored
    assert normalized_edit_distance("", "") == 0.0 and normalized_edit_distance("abc", "") == 1.0
    assert normalized_edit_distance("深度学习", "深度学") == pytest.approx(0.25)


def test_boxes_mask_fills_the_polygons():
    hit = ocr_mod.TextHit(np.array([[2, 3], [10, 3], [10, 7], [2, 7]], np.float32), "ab", 0.9)
    m = boxes_mask([hit], (12, 16))
    assert m[5, 6] and not m[0, 0] and m.sum() == 9 * 5


def test_missing_fonts_name_the_package(monkeypatch):
    find_font.cache_clear()
    monkeypatch.setattr(ocr_mod, "_KNOWN", {"en": ("/nonexistent.ttf",), "zh": ("/nonexistent.ttc",)})
    monkeypatch.setattr(ocr_mod.shutil, "which", lambda _: None)
    try:
        with pytest.raises(MissingFontError, match="fonts-wqy-microhei"):
            find_font("zh")
        with pytest.raises(ValueError, match="unknown script"):
            find_font("fr")
    finally:
        find_font.cache_clear()


def test_paddleocr_backend_is_a_clear_error_where_it_is_not_installed(tmp_path):
    r = make_ocr("paddleocr", tmp_path)
    try:
        import paddleocr  # noqa: F401
    except ImportError:
        with pytest.raises(MissingModelError, match="paddleocr is not installed"):
            r.setup()
    with pytest.raises(ValueError, match="unknown OCR backend"):
        make_ocr("tesseract", tmp_path)


def test_a_changed_model_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(ocr_mod.RAPIDOCR_MODELS, "PP-OCRv6_det_small.onnx", "0" * 32)
    with pytest.raises(Exception, match="refusing to load"):
        RapidOcrReader().setup()
