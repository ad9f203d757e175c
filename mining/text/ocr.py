"""OCR for text editing (ACE App. B.5.1): a reader over rapidocr's PP-OCR ONNX models, fonts found at run
time, a text renderer that records what it drew, and the normalised edit distance of a read-back.

rapidocr's wheel ships the PP-OCRv6 detection and recognition models and a direction classifier: a real
model that runs offline on CPU. Their checksums are pinned and verified in `setup()`. paddleocr is an
optional backend where it is installed with local model folders.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.resources import Resources

# the model files inside rapidocr 3.10's wheel (md5)
RAPIDOCR_MODELS = {
    "PP-OCRv6_det_small.onnx": "2d9ddb510a327379ed7e0df5e9832bb8",
    "PP-OCRv6_rec_small.onnx": "2398e03fe258d58286d126b0e42879c0",
    "ch_ppocr_mobile_v2.0_cls_mobile.onnx": "c99c6bfc2df6544427ad3c7c85feab36",
}
CJK_PACKAGE = "fonts-wqy-microhei"


@dataclass(frozen=True)
class TextHit:
    box: np.ndarray  # (4, 2) float polygon, x y in pixels
    text: str
    score: float


def _reading_order(hits: list[TextHit]) -> list[TextHit]:
    """Lines top to bottom (a hit whose centre lies within half a line height of a line's first hit joins
    it), each line left to right."""
    lines: list[list[TextHit]] = []
    for h in sorted(hits, key=lambda h: float(h.box[:, 1].mean())):
        cy, half = float(h.box[:, 1].mean()), float(np.ptp(h.box[:, 1])) / 2
        if lines and abs(cy - float(lines[-1][0].box[:, 1].mean())) <= max(half, 1.0):
            lines[-1].append(h)
        else:
            lines.append([h])
    return [h for line in lines for h in sorted(line, key=lambda h: float(h.box[:, 0].min()))]


def _is_text(text: str, score: float, min_score: float, min_chars: int) -> bool:
    """Single glyphs read off texture ('8' in coffee foam, 'm' on a rocket) are the detector's usual false
    positives: a hit counts as text with `min_chars` non-space characters and a score of `min_score`."""
    return score >= min_score and len("".join(text.split())) >= min_chars


class RapidOcrReader(ModelWrapper):
    """`reader(rgb uint8 HxWx3) -> [TextHit]` in reading order, hits that are not text (`_is_text`) left out."""

    def __init__(self, min_score: float = 0.5, threads: int = 1, min_chars: int = 2):
        self.min_score = min_score
        self.min_chars = min_chars
        self.threads = threads
        self.name = "rapidocr-ppocrv6"
        self.version = f"{_dist_version('rapidocr')}:" + ",".join(sorted(RAPIDOCR_MODELS))
        self._engine = None

    def resources(self) -> Resources:
        return Resources(cpus=float(self.threads))

    def setup(self) -> None:
        if self._engine is not None:
            return
        try:
            import rapidocr
            from rapidocr import RapidOCR
        except ImportError as e:
            raise MissingModelError(f"rapidocr is not installed ({e}): pip install rapidocr onnxruntime") from None
        from mining.objects.segment import check_md5

        models = Path(rapidocr.__file__).parent / "models"
        for name, md5 in RAPIDOCR_MODELS.items():
            if not (models / name).is_file():
                raise MissingModelError(f"rapidocr model {name} not found under {models}: rapidocr 3.10 ships it")
            check_md5(models / name, md5, f"rapidocr {name}")
        self._engine = RapidOCR(params={"Global.log_level": "error",
                                        "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
                                        "EngineConfig.onnxruntime.inter_op_num_threads": 1})
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    def __call__(self, image: np.ndarray) -> list[TextHit]:
        self.setup()
        out = self._engine(np.ascontiguousarray(image[..., ::-1]))  # rapidocr reads arrays as BGR (OpenCV order)
        if out.boxes is None or out.txts is None:
            return []
        hits = [TextHit(np.asarray(b, np.float32), t, float(s)) for b, t, s in zip(out.boxes, out.txts, out.scores)
                if _is_text(t, float(s), self.min_score, self.min_chars)]
        return _reading_order(hits)


class PaddleOcrReader(ModelWrapper):
    """paddleocr with local model folders (`det_dir`, `rec_dir`): optional, where paddleocr is installed."""

    RESOURCES = Resources(cpus=1.0)

    def __init__(self, det_dir: str | Path, rec_dir: str | Path, min_score: float = 0.5, min_chars: int = 2):
        self.det_dir, self.rec_dir, self.min_score, self.min_chars = Path(det_dir), Path(rec_dir), min_score, min_chars
        self.name = "paddleocr"
        self.version = f"{_dist_version('paddleocr')}:{self.det_dir.name},{self.rec_dir.name}"
        self._engine = None

    def setup(self) -> None:
        if self._engine is not None:
            return
        try:
            from paddleocr import PaddleOCR
        except ImportError:
            raise MissingModelError("paddleocr is not installed: use ocr backend 'rapidocr', or install paddleocr "
                                    "with local model folders") from None
        for d in (self.det_dir, self.rec_dir):
            if not d.is_dir():
                raise MissingModelError(f"paddleocr model folder {d} not found")
        self._engine = PaddleOCR(text_detection_model_dir=str(self.det_dir),
                                 text_recognition_model_dir=str(self.rec_dir), use_textline_orientation=False,
                                 use_doc_orientation_classify=False, use_doc_unwarping=False)

    def __call__(self, image: np.ndarray) -> list[TextHit]:
        self.setup()
        hits = []
        for res in self._engine.predict(np.ascontiguousarray(image[..., ::-1])):
            for poly, t, s in zip(res["rec_polys"], res["rec_texts"], res["rec_scores"]):
                if _is_text(t, float(s), self.min_score, self.min_chars):
                    hits.append(TextHit(np.asarray(poly, np.float32).reshape(-1, 2)[:4], t, float(s)))
        return _reading_order(hits)


def make_ocr(backend: str, models_dir: str | Path, min_score: float = 0.5, min_chars: int = 2):
    """'rapidocr', or 'paddleocr' (model folders <models_dir>/paddleocr/det and /rec)."""
    if backend == "rapidocr":
        return RapidOcrReader(min_score, min_chars=min_chars)
    if backend == "paddleocr":
        return PaddleOcrReader(Path(models_dir) / "paddleocr" / "det", Path(models_dir) / "paddleocr" / "rec",
                               min_score, min_chars)
    raise ValueError(f"unknown OCR backend {backend!r}; use rapidocr or paddleocr")


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def boxes_mask(hits: list[TextHit], shape: tuple[int, int]) -> np.ndarray:
    """The union of the hits' polygons as a boolean (H, W) mask."""
    import cv2

    m = np.zeros(shape, np.uint8)
    for h in hits:
        cv2.fillPoly(m, [np.round(h.box).astype(np.int32)], 1)
    return m.astype(bool)


# fonts: English needs any Latin TrueType font, Chinese a CJK one
_KNOWN = {
    "en": ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
           "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", "/Library/Fonts/Arial.ttf",
           "C:/Windows/Fonts/arial.ttf"),
    "zh": ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
           "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
           "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"),
}
_FC_QUERY = {"en": ("DejaVu Sans", ":lang=en"), "zh": ("WenQuanYi Micro Hei", ":lang=zh-cn")}


class MissingFontError(FileNotFoundError):
    pass


@lru_cache(maxsize=None)
def find_font(script: str) -> str:
    """A font file that renders `script` ('en' or 'zh'): known paths first, then fontconfig."""
    if script not in _KNOWN:
        raise ValueError(f"unknown script {script!r}; use en or zh")
    for p in _KNOWN[script]:
        if Path(p).is_file():
            return p
    if shutil.which("fc-list"):
        for query in _FC_QUERY[script]:
            out = subprocess.run(["fc-list", query, "file"], capture_output=True, text=True, check=False).stdout
            files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
            files = [f for f in files if f.lower().endswith((".ttf", ".ttc", ".otf"))]
            if files:
                return files[0]
    if script == "zh":
        raise MissingFontError(f"no Chinese font found: install {CJK_PACKAGE} (apt-get install {CJK_PACKAGE})")
    raise MissingFontError("no Latin TrueType font found: install fonts-dejavu-core")


def normalized_edit_distance(a: str, b: str) -> float:
    """Levenshtein distance / the longer length, on case-folded strings without whitespace; 0 when both empty."""
    a, b = "".join(a.casefold().split()), "".join(b.casefold().split())
    if not a and not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / max(len(a), len(b))
