"""Contact sheets: packed samples drawn for a person to judge, one row per sample.

A row shows every input (its mask, True = generate, as a red translucent overlay), then the target, and
under them the task, key, instruction and a few lineage scores. Text is drawn with a CJK-capable font when
one is installed (instructions quote Chinese text), else a Latin one, else PIL's bitmap default.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.records import AceSample

ROW_H = 200  # image height of a row, pixels
MAX_TILE_W = 320  # a panorama is squeezed to this width
PAD = 8
FONT_PX = 13
MIN_W = 900
MAX_SCORES = 8
MASK_RGB = (255, 0, 0)
MASK_ALPHA = 0.45


def _font(size: int = FONT_PX) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from mining.text.ocr import MissingFontError, find_font

    for script in ("zh", "en"):
        try:
            return ImageFont.truetype(find_font(script), size)
        except (MissingFontError, OSError):
            continue
    return ImageFont.load_default()


def _decode(data: bytes, mode: str) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert(mode)


def _overlay(im: Image.Image, mask: Image.Image | None) -> tuple[Image.Image, str]:
    """The image with its mask tinted, and a word on the mask ('' when there is none)."""
    if mask is None:
        return im, ""
    m = np.asarray(mask.resize(im.size, Image.Resampling.NEAREST)) > 128
    share = float(m.mean())
    if share >= 0.999:
        return im, "mask: all"
    if not m.any():
        return im, "mask: empty"
    a = np.asarray(im).astype(np.float32)
    a[m] = (1 - MASK_ALPHA) * a[m] + MASK_ALPHA * np.array(MASK_RGB, np.float32)
    return Image.fromarray(a.round().astype(np.uint8)), f"mask {share:.0%}"


def _tile(im: Image.Image, row_h: int) -> Image.Image:
    w = max(1, round(im.width * row_h / im.height))
    return im.resize((min(w, MAX_TILE_W), row_h), Image.Resampling.LANCZOS)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy wrap by width; breaks at a space when the line has one, else mid-word (CJK has none)."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for ch in para:
            if draw.textlength(line + ch, font=font) <= width:
                line += ch
                continue
            cut = line.rfind(" ")
            if cut > 0:
                lines.append(line[:cut])
                line = line[cut + 1:] + ch
            else:
                lines.append(line)
                line = ch
        lines.append(line)
    return lines


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _caption(sample: AceSample, note: str | None) -> list[str]:
    lin = sample.lineage
    scores = sorted(lin.scores.items())[:MAX_SCORES]
    more = len(lin.scores) - len(scores)
    out = [f"{sample.task}  |  {sample.key}", f"instruction: {sample.instruction}"]
    if scores:
        out.append("scores: " + ", ".join(f"{k}={_fmt(v)}" for k, v in scores) + (f" (+{more})" if more else ""))
    if lin.labels:
        out.append("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(lin.labels.items())))
    if lin.generators:
        out.append("generators: " + ", ".join(g.name for g in lin.generators))
    if note:
        out.append(note)
    return out


def _row(sample: AceSample, note: str | None, font, row_h: int) -> Image.Image:
    tiles: list[tuple[Image.Image, str]] = []
    for i, u in enumerate(sample.units):
        im, word = _overlay(_decode(u.image, "RGB"), None if u.mask is None else _decode(u.mask, "L"))
        role = getattr(u.role, "value", u.role)
        tiles.append((_tile(im, row_h), f"in{i} {role} {im.width}x{im.height} {word}".rstrip()))
    tgt = _decode(sample.target.image, "RGB")
    tiles.append((_tile(tgt, row_h), f"target {tgt.width}x{tgt.height}"))
    line_h = FONT_PX + 4
    width = max(MIN_W, sum(t.width for t, _ in tiles) + PAD * (len(tiles) + 1))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = [ln for s in _caption(sample, note) for ln in _wrap(probe, s, font, width - 2 * PAD)]
    row = Image.new("RGB", (width, line_h + row_h + PAD + line_h * len(text) + PAD), "white")
    draw = ImageDraw.Draw(row)
    x = PAD
    for im, label in tiles:
        draw.text((x, 2), label, font=font, fill=(60, 60, 60))
        row.paste(im, (x, line_h))
        x += im.width + PAD
    y = line_h + row_h + PAD // 2
    for ln in text:
        draw.text((PAD, y), ln, font=font, fill=(0, 0, 0))
        y += line_h
    return row


def contact_sheet(samples: Sequence[AceSample], out_png: str | Path, notes: Sequence[str | None] | None = None,
                  row_h: int = ROW_H) -> Path:
    """Draw `samples` one per row into `out_png` (notes: an extra caption line per sample, e.g. a check's
    verdict); returns the path written."""
    if not samples:
        raise ValueError("no samples to draw")
    if notes is not None and len(notes) != len(samples):
        raise ValueError(f"{len(notes)} notes for {len(samples)} samples")
    font = _font()
    rows = [_row(s, notes[i] if notes else None, font, row_h) for i, s in enumerate(samples)]
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) + 2 * (len(rows) - 1)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
        draw.rectangle((0, y, width, y + 1), fill=(150, 150, 150))
        y += 2
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out
