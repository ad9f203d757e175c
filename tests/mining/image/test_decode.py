import io

import numpy as np
import pytest
from PIL import Image

from mining.image.decode import RejectedImage, decode_image, encode_mask, normalized_bytes
from schemas.records import QuarantineReason
from stages.corpus.demo_corpus import _bomb_png

CAP = dict(max_pixels=10_000_000, min_side=32)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w=120, h=90) -> Image.Image:
    rng = np.random.default_rng(3)
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3) + rng.integers(0, 20, (h, w, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _reason(data: bytes, **kw) -> QuarantineReason:
    with pytest.raises(RejectedImage) as e:
        decode_image(data, **{**CAP, **kw})
    return e.value.reason


def test_bad_inputs_get_their_reason():
    jpg = _bytes(_photo(), "JPEG", quality=90)
    png = _bytes(_photo(), "PNG")
    assert _reason(b"") is QuarantineReason.EMPTY
    assert _reason(b"hello, not an image" * 10) is QuarantineReason.NOT_AN_IMAGE
    assert _reason(jpg[: len(jpg) // 3]) is QuarantineReason.TRUNCATED
    assert _reason(png[: len(png) // 2]) is QuarantineReason.TRUNCATED
    assert _reason(_bomb_png(50_000, 50_000)) is QuarantineReason.TOO_LARGE
    assert _reason(_bytes(Image.new("RGB", (20, 200)), "PNG")) is QuarantineReason.TOO_SMALL
    corrupt = bytearray(png)
    corrupt[len(png) // 2 : len(png) // 2 + 64] = bytes(64)
    assert _reason(bytes(corrupt)) in (QuarantineReason.CORRUPT, QuarantineReason.TRUNCATED)
    assert _reason(_bytes(Image.new("F", (64, 64), 0.5), "TIFF")) is QuarantineReason.UNSUPPORTED_MODE


def test_pixel_cap_is_checked_from_the_header_before_decoding():
    data = _bytes(Image.new("RGB", (400, 300)), "PNG")
    assert _reason(data, max_pixels=119_999) is QuarantineReason.TOO_LARGE
    assert decode_image(data, max_pixels=120_000, min_side=32).width == 400


def test_cmyk_becomes_rgb_with_the_right_colours():
    rgb = Image.new("RGB", (64, 64), (200, 40, 40))
    dec = decode_image(_bytes(rgb.convert("CMYK"), "JPEG", quality=95), **CAP)
    assert dec.mode == "CMYK" and dec.image.mode == "RGB"
    assert np.abs(np.asarray(dec.image).astype(int) - [200, 40, 40]).max() < 12


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.full((40, 40), 257 * 100, np.uint16)
    arr[0, 0] = 65535
    dec = decode_image(_bytes(Image.fromarray(arr), "PNG"), **CAP)
    assert dec.mode.startswith("I")
    out = np.asarray(dec.image)
    assert out[5, 5, 0] == 100 and out[0, 0, 0] == 255


def test_alpha_and_transparent_palette_are_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (10, 20, 30, 0))
    rgba.putpixel((1, 1), (10, 20, 30, 255))
    out = np.asarray(decode_image(_bytes(rgba, "PNG"), **CAP).image)
    assert tuple(out[5, 5]) == (255, 255, 255) and tuple(out[1, 1]) == (10, 20, 30)
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    pal.putpixel((2, 2), 1)
    out = np.asarray(decode_image(_bytes(pal, "PNG", transparency=0), **CAP).image)
    assert tuple(out[5, 5]) == (255, 255, 255) and tuple(out[2, 2]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (120, 60), (0, 0, 0))
    upright.paste((255, 255, 255), (0, 0, 30, 60))  # white band on the left when displayed
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 60 x 120, as a camera would store it
    exif = Image.Exif()
    exif[0x0112] = 6
    dec = decode_image(_bytes(stored, "JPEG", exif=exif, quality=95), **CAP)
    assert (dec.width, dec.height) == (120, 60)
    arr = np.asarray(dec.image).mean(axis=2)
    assert arr[:, :25].mean() > 200 and arr[:, 40:].mean() < 50


def test_animated_gif_uses_first_frame():
    frames = [Image.new("P", (40, 40), c) for c in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    dec = decode_image(buf.getvalue(), **CAP)
    assert dec.format == "GIF" and dec.image.size == (40, 40)


def test_normalized_bytes_passes_plain_files_and_reencodes_the_rest():
    jpg = _bytes(_photo(), "JPEG", quality=90)
    assert normalized_bytes(jpg, **CAP) == (jpg, "jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _bytes(_photo(), "JPEG", exif=exif)
    data, ext = normalized_bytes(rotated, **CAP)
    assert ext == "png" and Image.open(io.BytesIO(data)).size == (90, 120)
    cmyk = _bytes(_photo().convert("CMYK"), "JPEG")
    data, ext = normalized_bytes(cmyk, **CAP)
    assert ext == "png" and Image.open(io.BytesIO(data)).mode == "RGB"


def test_encode_mask_is_binary_png():
    m = np.array([[0, 1], [7, 0]])
    back = np.asarray(Image.open(io.BytesIO(encode_mask(m))))
    assert back.tolist() == [[0, 255], [255, 0]]
