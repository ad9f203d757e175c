"""Is what OCR read text? Confirmation of OCR detections before a text removal, and the supervision checks of
text samples.

The detector reads texture as text: roof tiles as "AAAA", grass or a tripod as "0000" at a high score, an
image border as a line of Chinese. A detection is confirmed when (cheapest first)
- its recognition score is at least `min_score`;
- its characters look like writing (`character_reason`): not one glyph repeated ("AAAA", "0000"), not a short
  unit repeated ("ARAR"), not two glyphs or fewer in a longer reading ("2000"), mostly letters or digits, not
  several scripts inside one short word;
- a second read agrees: OCR (detection and recognition) run again on the box's region, cropped with context
  and upscaled (by each of `scales` in turn), reads the same text within `max_ned` (`fit_ned`: edit
  distance over its length).

The functions take an OCR callable (`ocr(rgb) -> [TextHit]`, mining/text/ocr.py) and images; `text_removal_ok` and
`text_addition_ok` are the supervision checks (mining/supervision.py) and read with rapidocr.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import numpy as np

from mining.text.ocr import TextHit, normalized_edit_distance
from schemas.config import SupervisionConfig

if TYPE_CHECKING:
    from mining.supervision import View

CONFIRMER = ("text-confirm", "1")
Ocr = Callable[[np.ndarray], list[TextHit]]
MIN_GLYPHS = 2  # a read of fewer glyphs is not text (the stage's default `min_chars`)
IN_MASK = 0.2  # a hit is inside a mask when this share of its box is


@dataclass(frozen=True)
class Rules:
    min_score: float = 0.8  # recognition score of the first read
    max_ned: float = 0.34  # `fit_ned` of the first read in the second
    scales: tuple[float, ...] = (2.0, 1.5)  # the second read's upscales, tried in turn until one agrees (a
    max_px: int = 256  # downscale by the factor where the text would get taller than this)
    max_mixed_len: int = 3  # a word this short holds one script

    @classmethod
    def of(cls, cfg) -> "Rules":
        """From TextSynthConfig (`confirm_*` fields) or SupervisionConfig (`text_*` fields)."""
        if hasattr(cfg, "confirm_min_score"):
            return cls(cfg.confirm_min_score, cfg.confirm_max_ned, tuple(cfg.confirm_scales))
        return cls(cfg.text_min_score, cfg.text_max_ned, tuple(cfg.text_confirm_scales))


def _script(ch: str) -> str:
    if ch.isdigit():
        return "digit"
    if not ch.isalpha():
        return "symbol"
    name = unicodedata.name(ch, "")
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")):
        return "cjk"
    return "latin" if name.startswith("LATIN") else "other"


def character_reason(text: str, max_mixed_len: int = 3) -> str | None:
    """Why `text` does not look like writing ('repeated_glyph', 'repeated_unit', 'low_diversity', 'symbols',
    'mixed_script', 'too_short'), or None."""
    g = "".join(text.split())
    if len(g) < MIN_GLYPHS:
        return "too_short"
    if len(set(g)) == 1:
        return "repeated_glyph"
    period = next((p for p in range(1, len(g) // 2 + 1) if len(g) % p == 0 and g == g[:p] * (len(g) // p)), None)
    if period is not None:
        return "repeated_unit"
    scripts = [_script(c) for c in g]
    if len(set(g)) <= 2 and (len(g) >= 4 or all(s == "digit" for s in scripts) and len(g) >= 3):
        return "low_diversity"
    if sum(s != "symbol" for s in scripts) < 0.6 * len(g):
        return "symbols"
    for word in text.split():
        kinds = {_script(c) for c in word} - {"digit", "symbol"}
        if len(kinds) > 1 and (len(word) <= max_mixed_len or "other" in kinds):
            return "mixed_script"
    return None


def region(box: tuple[int, int, int, int], margin: float = 0.5, max_aspect: float = 3.0
           ) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around `box` with `margin` times its height on each side, widened along its short side
    to at most `max_aspect` (the detector resizes a crop's short side to a fixed length); may leave the image."""
    x0, y0, x1, y1 = box
    pad = max(4, int(round(margin * max(1, y1 - y0))))
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    bw, bh = x1 - x0, y1 - y0
    if bw > max_aspect * bh:
        grow = int(np.ceil((bw / max_aspect - bh) / 2))
        y0, y1 = y0 - grow, y1 + grow
    elif bh > max_aspect * bw:
        grow = int(np.ceil((bh / max_aspect - bw) / 2))
        x0, x1 = x0 - grow, x1 + grow
    return x0, y0, x1, y1


def crop(image: np.ndarray, r: tuple[int, int, int, int]) -> np.ndarray:
    """`image[r]`, the part outside the image filled with the crop's median colour (text at the border keeps
    its margin: the detector misses text touching a crop's edge)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = r
    inner = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1), :3]
    fill = np.median(inner.reshape(-1, 3), axis=0).astype(np.uint8) if inner.size else np.zeros(3, np.uint8)
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    out[:] = fill
    out[max(0, y0) - y0 : max(0, y0) - y0 + inner.shape[0], max(0, x0) - x0 : max(0, x0) - x0 + inner.shape[1]] = inner
    return out


def _bounds(poly: np.ndarray) -> tuple[int, int, int, int]:
    return (int(np.floor(poly[:, 0].min())), int(np.floor(poly[:, 1].min())), int(np.ceil(poly[:, 0].max())),
            int(np.ceil(poly[:, 1].max())))


def read_region(ocr: Ocr, image: np.ndarray, box: tuple[int, int, int, int], scale: float = 1.0,
                margin: float = 0.5) -> list[TextHit]:
    """OCR of the region around `box` (x0 y0 x1 y1), rescaled by `scale`; boxes in the image's coordinates."""
    import cv2

    x0, y0, x1, y1 = region(box, margin)
    part = crop(image, (x0, y0, x1, y1))
    if scale != 1.0:
        size = (max(8, int(round(part.shape[1] * scale))), max(8, int(round(part.shape[0] * scale))))
        part = cv2.resize(part, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    sx, sy = (x1 - x0) / part.shape[1], (y1 - y0) / part.shape[0]
    return [TextHit(h.box * np.float32([sx, sy]) + np.float32([x0, y0]), h.text, h.score) for h in ocr(part)]


def relaxed(ocr: Ocr, min_score: float = 0.3) -> Ocr:
    """The same reader (one engine) keeping single glyphs: a second read may split a word the first read
    whole ('学习' as '学', '习')."""
    if not hasattr(ocr, "min_chars"):
        return ocr
    import copy

    ocr.setup()
    out = copy.copy(ocr)
    out.min_score, out.min_chars = min(min_score, ocr.min_score), 1
    return out


def fit_ned(text: str, read: str) -> float:
    """Edit distance of `text` to the closest part of `read` over the length of `text` (case-folded, without
    whitespace): 0 when a second read holds the first whole (it may join a neighbouring word), 1 when empty."""
    a, b = "".join(text.casefold().split()), "".join(read.casefold().split())
    if not a:
        return 0.0
    prev = [0] * (len(b) + 1)  # a match may start anywhere in `read`
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return min(prev) / len(a)  # ... and end anywhere


def second_read(ocr: Ocr, image: np.ndarray, hit: TextHit, scale: float, max_px: int = 256) -> str:
    """The text read again around `hit`, upscaled by `scale` (downscaled by it where the text would get taller
    than `max_px`); the reads overlapping the hit's box, in reading order."""
    box = _bounds(hit.box)
    scale = scale if (box[3] - box[1]) * scale <= max_px else 1.0 / scale
    reads = [h for h in read_region(relaxed(ocr), image, box, scale) if _overlap(_bounds(h.box), box) > 0]
    return " ".join(h.text for h in reads)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection of two boxes over the smaller one's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(1, small)


def confirm_hit(ocr: Ocr, image: np.ndarray, hit: TextHit, rules: Rules) -> tuple[str | None, dict[str, float]]:
    """(None when `hit` is confirmed text, else why: 'low_score', a `character_reason`, 'reread_mismatch';
    the scores measured)."""
    if hit.score < rules.min_score:
        return "low_score", {"score": hit.score}
    why = character_reason(hit.text, rules.max_mixed_len)
    if why is not None:
        return why, {"score": hit.score}
    ned = 1.0
    for scale in rules.scales:
        ned = fit_ned(hit.text, second_read(ocr, image, hit, scale, rules.max_px))
        if ned <= rules.max_ned:
            return None, {"score": hit.score, "reread_ned": ned}
    return "reread_mismatch", {"score": hit.score, "reread_ned": ned}


def confirm_hits(ocr: Ocr, image: np.ndarray, hits: list[TextHit], rules: Rules
                 ) -> tuple[list[TextHit], Counter, dict[str, float]]:
    """(the confirmed hits, the rest counted by reason, scores: the worst second-read distance kept)."""
    kept, why = [], Counter()
    worst = 0.0
    for h in hits:
        reason, s = confirm_hit(ocr, image, h, rules)
        if reason is None:
            kept.append(h)
            worst = max(worst, s["reread_ned"])
        else:
            why[reason] += 1
    return kept, why, {"reread_ned_max": worst, "ocr_unconfirmed": float(sum(why.values()))}


# --- the supervision checks ---------------------------------------------------------------------------------

_QUOTES = (('"', '"'), ("\u201c", "\u201d"), ("\u300c", "\u300d"), ("\u300e", "\u300f"), ("\u2018", "\u2019"))


def named_text(instruction: str) -> str | None:
    """The text an instruction names: inside its first pair of straight double quotes (the templates of
    mining/instructions/text.py), else of curly or CJK quotes (a rewritten instruction); None when none."""
    for left, right in _QUOTES:
        i = instruction.find(left)
        j = instruction.find(right, i + 1) if i >= 0 else -1
        if j > i + 1 and instruction[i + 1 : j].strip():
            return instruction[i + 1 : j].strip()
    return None


@lru_cache(maxsize=1)
def _reader():
    from mining.text.ocr import RapidOcrReader

    return RapidOcrReader(min_score=0.3, min_chars=1)  # every read; the checks apply their own thresholds


def inside(hit: TextHit, mask: np.ndarray | None) -> bool:
    """Whether `IN_MASK` of the hit's bounding box lies in `mask` (None: everywhere)."""
    if mask is None:
        return True
    x0, y0, x1, y1 = _bounds(hit.box)
    part = mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    return part.size > 0 and float(part.mean()) >= IN_MASK


def _mask_box(mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    if mask is None or not mask.any():
        return 0, 0, shape[1], shape[0]
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def read_confirmed(image: np.ndarray, mask: np.ndarray | None, rules: Rules, ocr: Ocr | None = None
                   ) -> tuple[str, dict[str, float]]:
    """The confirmed text read inside `mask` (its bounding box and a margin are read), in reading order."""
    ocr = ocr or _reader()
    hits = [h for h in read_region(ocr, image, _mask_box(mask, image.shape[:2])) if inside(h, mask)]
    kept, _, scores = confirm_hits(ocr, image, hits, rules)
    return " ".join(h.text for h in kept), {"text_reads": float(len(hits)), "text_confirmed": float(len(kept)),
                                            **{f"text_{k}": v for k, v in scores.items()}}


def _names(v: "View", cfg: SupervisionConfig, image: np.ndarray) -> tuple[bool, dict[str, float]]:
    """Whether the text the instruction names (any confirmed text where it names none) is read in `image`
    inside the edit's mask."""
    text, scores = read_confirmed(image, v.mask, Rules.of(cfg))
    named = named_text(v.instruction)
    ned = normalized_edit_distance(text, named) if named else float(not text)
    scores["text_named_ned"] = round(ned, 4)
    return bool(text) and ned <= cfg.text_max_ned, scores


def text_removal_ok(v: "View", cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """text_removal: the text the instruction names is read and confirmed inside the mask of the edit image, and
    no text (`text_left_min_score`, two glyphs) is read there in the target."""
    if v.edit is None:
        return "text_unconfirmed", {}
    ok, scores = _names(v, cfg, v.edit)
    if not ok:
        return "text_unconfirmed", scores
    box = _mask_box(v.mask, v.target.shape[:2])
    left = [h for h in read_region(_reader(), v.target, box) if inside(h, v.mask)
            and h.score >= cfg.text_left_min_score and len("".join(h.text.split())) >= MIN_GLYPHS]
    scores["text_left"] = float(len(left))
    return ("text_unconfirmed" if left else None), scores


def text_addition_ok(v: "View", cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """text_addition: the text the instruction names reads back, confirmed, in the target inside the mask."""
    ok, scores = _names(v, cfg, v.target)
    return (None if ok else "text_unconfirmed"), scores
