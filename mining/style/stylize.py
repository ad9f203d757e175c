"""A bank of classical, deterministic stylisations: each takes an RGB uint8 image and returns one of the same
size. They make the demo corpus' style family, and they are the offline stand-in for the style-transfer model
ACE uses to render a content image in a style set's style (no such model ships in a package): a style pair's
target is the bank operation whose output matches the style set best (the match is scored and thresholded).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# a fixed warm poster palette (RGB): quantising to it is a strong, reproducible colour style
PALETTE = np.array([[32, 24, 48], [92, 44, 84], [196, 72, 60], [236, 156, 72], [248, 224, 168],
                    [64, 112, 120], [144, 184, 160]], np.uint8)


def pencil(image: np.ndarray) -> np.ndarray:
    """Colour pencil sketch (cv2.pencilSketch)."""
    import cv2

    _, colour = cv2.pencilSketch(np.ascontiguousarray(image[..., ::-1]), sigma_s=40, sigma_r=0.08, shade_factor=0.04)
    return np.ascontiguousarray(colour[..., ::-1])


def poster(image: np.ndarray) -> np.ndarray:
    """Edge-preserving smoothing, then each pixel mapped to the nearest colour of a fixed palette."""
    import cv2

    smooth = cv2.bilateralFilter(np.ascontiguousarray(image), 9, 60, 9).astype(np.int32)
    d = ((smooth[:, :, None, :] - PALETTE[None, None].astype(np.int32)) ** 2).sum(-1)
    return PALETTE[d.argmin(-1)]


INK, PAPER = np.array([28, 28, 40], np.uint8), np.array([244, 236, 216], np.uint8)


def ink(image: np.ndarray) -> np.ndarray:
    """Two tones: dark ink where the grey image is darker than its 9 px neighbourhood mean, cream paper
    elsewhere (adaptive threshold after a median blur)."""
    import cv2

    g = cv2.medianBlur(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), 3)
    paper = cv2.adaptiveThreshold(g, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 6) > 0
    return np.where(paper[..., None], PAPER, INK)


def watercolour(image: np.ndarray) -> np.ndarray:
    """cv2.stylization (edge-aware smoothing with flattened shading)."""
    import cv2

    out = cv2.stylization(np.ascontiguousarray(image[..., ::-1]), sigma_s=60, sigma_r=0.45)
    return np.ascontiguousarray(out[..., ::-1])


STYLES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "pencil": (pencil, "a colour pencil sketch"),
    "poster": (poster, "a flat poster with a warm seven-colour palette"),
    "watercolour": (watercolour, "a soft watercolour-like painting"),
    "ink": (ink, "a two-tone black ink drawing on cream paper"),
}
STYLIZER = ("classical-stylize", "2")


def stylize(name: str, image: np.ndarray) -> np.ndarray:
    try:
        fn = STYLES[name][0]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; known: {', '.join(STYLES)}") from None
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"stylize needs an RGB uint8 (h, w, 3) image, got {image.dtype} {image.shape}")
    return fn(image)
