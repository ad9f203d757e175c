"""Safe image decoding: bytes in, an RGB PIL image out, or a rejection with a reason code.

Every stage that reads a catalogued image decodes it here, so widths, heights and orientation
agree with the catalog.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from schemas.records import QuarantineReason

# Pillow's own bomb guard raises at 2x this; our cap (checked from the header) is the one that decides.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_SRGB = ImageCms.createProfile("sRGB")
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class RejectedImage(Exception):
    def __init__(self, reason: QuarantineReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str  # container format from the header: JPEG, PNG, ...
    mode: str  # pixel mode before normalisation

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage(QuarantineReason.NOT_AN_IMAGE,
                            f"no image decoder recognises these {len(data)} bytes") from None  # never quoted
    except Image.DecompressionBombError as e:
        raise RejectedImage(QuarantineReason.TOO_LARGE, str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise RejectedImage(QuarantineReason.CORRUPT, f"{type(e).__name__}: {e}") from None


def _load(im: Image.Image) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        msg = f"{type(e).__name__}: {e}"
        truncated = "truncated" in str(e).lower() or isinstance(e, EOFError)
        raise RejectedImage(QuarantineReason.TRUNCATED if truncated else QuarantineReason.CORRUPT, msg) from None


def _high_bit_depth_to_8(im: Image.Image) -> Image.Image:
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        scale = 65535.0
    else:  # "I": 32-bit signed, used by Pillow for some 16-bit files; scale by the data's range
        scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
    out = np.clip(arr.astype(np.float64) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _high_bit_depth_to_8(im).convert("RGB")
    if mode == "CMYK":
        icc = im.info.get("icc_profile")
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                return ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
            except (ImageCms.PyCMSError, OSError):
                pass  # a broken profile: the naive conversion below is still a faithful image
        return im.convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("L", "1", "YCbCr"):
        return im.convert("RGB")
    raise RejectedImage(QuarantineReason.UNSUPPORTED_MODE, f"pixel mode {mode} has no faithful RGB conversion")


def decode_image(data: bytes, *, max_pixels: int, min_side: int) -> DecodedImage:
    """Decode `data` to RGB with EXIF orientation applied, or raise RejectedImage."""
    if len(data) == 0:
        raise RejectedImage(QuarantineReason.EMPTY, "zero bytes")
    im = _open(data)
    fmt = im.format or "UNKNOWN"
    w, h = im.size
    if w * h > max_pixels:
        raise RejectedImage(QuarantineReason.TOO_LARGE, f"{w}x{h} = {w * h} pixels > cap {max_pixels}")
    if min(w, h) < min_side:
        raise RejectedImage(QuarantineReason.TOO_SMALL, f"{w}x{h}: shorter side < {min_side}")
    mode = im.mode
    _load(im)
    try:
        oriented = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        oriented = im  # unreadable EXIF: keep the pixels as stored
    try:
        rgb = _to_rgb(oriented)
    except RejectedImage:
        raise
    except (OSError, ValueError) as e:
        raise RejectedImage(QuarantineReason.CORRUPT, f"{type(e).__name__}: {e}") from None
    return DecodedImage(image=rgb, format=fmt, mode=mode)


@functools.lru_cache(maxsize=1)
def pillow_extensions() -> tuple[str, ...]:
    """File endings (no dot, lower case) of every format the installed Pillow decodes: its registered
    openers, less stubs (BUFR, GRIB, HDF5, WMF: they need a handler Pillow does not ship), MPEG (identified,
    never decoded) and EPS when Ghostscript is missing."""
    from PIL import EpsImagePlugin

    Image.init()
    skip = {"MPEG"} | (set() if EpsImagePlugin.has_ghostscript() else {"EPS"})
    out = set()
    for ext, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt in skip:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        out.add(ext.lower().lstrip("."))
    return tuple(sorted(out))


def encode_image(im: Image.Image, ext: str = "png", quality: int = 95) -> bytes:
    """Deterministic encoding for shards: PNG (lossless), JPEG or WEBP."""
    buf = io.BytesIO()
    if ext == "png":
        im.save(buf, format="PNG", optimize=False, compress_level=6)
    elif ext == "jpg":
        im.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif ext == "webp":
        im.save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"unsupported image extension {ext!r}; use png, jpg or webp")
    return buf.getvalue()


def encode_mask(mask: np.ndarray | Image.Image) -> bytes:
    """A mask as PNG mode L: 255 where the model generates, 0 where it keeps."""
    if isinstance(mask, np.ndarray):
        mask = Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L")
    return encode_image(mask.convert("L"), "png")


_PASSTHROUGH = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def normalized_bytes(data: bytes, *, max_pixels: int, min_side: int) -> tuple[bytes, str]:
    """(bytes, ext) of an image as shards store it: the original file when it is already plain RGB
    JPEG / PNG / WEBP with no orientation to apply, otherwise the decoded RGB image as PNG."""
    dec = decode_image(data, max_pixels=max_pixels, min_side=min_side)
    ext = _PASSTHROUGH.get(dec.format)
    if ext and dec.mode == "RGB":
        with Image.open(io.BytesIO(data)) as raw:
            if raw.size == dec.image.size and raw.getexif().get(0x0112, 1) == 1:
                return data, ext
    return encode_image(dec.image, "png"), "png"
