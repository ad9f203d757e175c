"""Render English or Chinese text onto an image, recording what was drawn (ACE App. B.5.1: content, font,
size, colour and position), with the mask of the pixels that changed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mining.text.ocr import find_font

RENDERER = ("pil-text-render", "1")

WORDS_EN = ("open", "sale", "coffee", "welcome", "exit", "garden", "music", "hotel", "fresh", "bakery", "station",
            "library", "market", "summer", "river", "north", "sunday", "pizza", "museum", "office", "taxi", "books",
            "park", "happy", "ocean", "tickets", "street", "studio", "lunch", "travel")
PHRASES_ZH = ("欢迎光临", "新年快乐", "咖啡", "书店", "出口", "花园", "音乐", "火车站", "图书馆", "市场", "夏天",
              "大海", "早餐", "博物馆", "春天", "你好", "旅行", "学习", "公园", "天气很好")
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (220, 30, 30),
           "yellow": (250, 220, 40), "blue": (30, 80, 220), "green": (30, 160, 60), "orange": (245, 140, 20),
           "purple": (140, 50, 180)}
# a 3x3 grid of named positions: (row, column) -> words an instruction uses
POSITIONS = {(0, 0): "top left", (0, 1): "top", (0, 2): "top right", (1, 0): "left", (1, 1): "center",
             (1, 2): "right", (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right"}


@dataclass(frozen=True)
class Rendered:
    content: str
    script: str  # en | zh
    font: str  # the font file's name
    size: int  # pixels
    colour: str
    position: str
    box: tuple[int, int, int, int]  # x0 y0 x1 y1 of the drawn text

    def params(self) -> dict:
        return asdict(self)


def _luma(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _content(script: str, rng: np.random.Generator) -> str:
    if script == "zh":
        return str(rng.choice(PHRASES_ZH))
    n = int(rng.integers(1, 3))
    return " ".join(str(w) for w in rng.choice(WORDS_EN, n, replace=False)).upper() if rng.random() < 0.5 else \
        " ".join(str(w) for w in rng.choice(WORDS_EN, n, replace=False)).capitalize()


def render_text(image: np.ndarray, script: str, rng: np.random.Generator, min_px: int = 14,
                size_frac: tuple[float, float] = (0.1, 0.2), min_contrast: float = 90.0
                ) -> tuple[np.ndarray, np.ndarray, Rendered] | None:
    """(the image with text drawn, the mask of changed pixels, what was drawn), or None when no text of at
    least `min_px` fits. The colour is one whose luminance differs from the region's by `min_contrast`."""
    h, w = image.shape[:2]
    path = find_font(script)
    content = _content(script, rng)
    size = max(min_px, int(rng.uniform(*size_frac) * min(h, w)))
    while True:
        font = ImageFont.truetype(path, size)
        x0, y0, x1, y1 = font.getbbox(content)
        tw, th = x1 - x0, y1 - y0
        if tw <= 0.9 * w and th <= 0.4 * h:
            break
        if size <= min_px:
            if script == "en" and " " in content:
                content = content.split(" ")[0]
                continue
            if script == "zh" and len(content) > 2:
                content = content[:2]
                continue
            return None
        size = max(min_px, int(size * 0.85))
    row, col = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    margin = max(2, int(0.04 * min(h, w)))
    free_x, free_y = max(0, w - tw - 2 * margin), max(0, h - th - 2 * margin)
    left = margin + int(free_x * (col / 2 + rng.uniform(-0.08, 0.08) * (col == 1)))
    top = margin + int(free_y * (row / 2 + rng.uniform(-0.08, 0.08) * (row == 1)))
    left, top = min(max(0, left), w - tw), min(max(0, top), h - th)
    region = image[top : top + th, left : left + tw].reshape(-1, image.shape[2])[:, :3].mean(0)
    fits = [n for n, c in COLOURS.items() if abs(_luma(c) - _luma(region)) >= min_contrast]
    colour = str(rng.choice(fits)) if fits else ("black" if _luma(region) > 127 else "white")
    im = Image.fromarray(image).convert("RGB")
    ImageDraw.Draw(im).text((left - x0, top - y0), content, font=font, fill=COLOURS[colour])
    out = np.asarray(im)
    changed = np.any(out != image[..., :3], axis=-1)
    if not changed.any():
        return None
    info = Rendered(content=content, script=script, font=Path(path).name, size=size, colour=colour,
                    position=POSITIONS[(row, col)], box=(left, top, left + tw, top + th))
    return out, changed, info
