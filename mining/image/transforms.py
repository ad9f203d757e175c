"""Known image transformations with the instruction that describes each.

The demo corpus applies them to real photos so families of related images exist with ground truth;
a pair (base -> variant) made by one of them gets its instruction from here, not from a model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class Transformed:
    image: Image.Image
    params: dict[str, Any]
    instruction: str


def crop(im: Image.Image, rng: np.random.Generator) -> Transformed:
    frac = float(rng.uniform(0.75, 0.9))
    w, h = im.size
    cw, ch = int(w * frac), int(h * frac)
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    box = (x0, y0, x0 + cw, y0 + ch)
    return Transformed(im.crop(box), {"box": list(box)}, "Zoom in on {image}, cropping away its borders.")


def hflip(im: Image.Image, rng: np.random.Generator) -> Transformed:
    return Transformed(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {}, "Mirror {image} horizontally.")


def color(im: Image.Image, rng: np.random.Generator) -> Transformed:
    factor = float(rng.uniform(0.3, 0.6))
    out = ImageEnhance.Color(im).enhance(factor)
    return Transformed(out, {"saturation": round(factor, 4)}, "Make the colours of {image} more muted.")


def recompress(im: Image.Image, rng: np.random.Generator) -> Transformed:
    q = int(rng.integers(20, 40))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=q)
    out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return Transformed(out, {"jpeg_quality": q}, "Degrade {image} with strong JPEG compression artefacts.")


def rotate(im: Image.Image, rng: np.random.Generator) -> Transformed:
    angle = float(rng.uniform(3.0, 8.0)) * (1 if rng.random() < 0.5 else -1)
    out = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    side = "counter-clockwise" if angle > 0 else "clockwise"
    return Transformed(out, {"degrees": round(angle, 3)}, f"Rotate {{image}} slightly {side}.")


def brighten(im: Image.Image, rng: np.random.Generator) -> Transformed:
    factor = float(rng.uniform(1.25, 1.5))
    out = ImageEnhance.Brightness(im).enhance(factor)
    return Transformed(out, {"brightness": round(factor, 4)}, "Make {image} brighter.")


TRANSFORMS: dict[str, Callable[[Image.Image, np.random.Generator], Transformed]] = {
    "crop": crop, "hflip": hflip, "color": color, "recompress": recompress, "rotate": rotate, "brighten": brighten,
}


def apply(name: str, im: Image.Image, rng: np.random.Generator) -> Transformed:
    try:
        fn = TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown transformation {name!r}; known: {', '.join(TRANSFORMS)}") from None
    return fn(im, rng)
