"""Faces with dlib's offline models: HOG detection, 5-point landmarks, aligned 150x150 chips, 128-d descriptors.

Weights: `shape_predictor_5_face_landmarks.dat` and `dlib_face_recognition_resnet_model_v1.dat` (CC0, as
the `face-recognition-models` package ships them). They load from `<models_dir>/dlib/` when present, else
from that package's folder (located without importing it), and only when their sha256 matches the pin
below. The 68-point predictor in the same package is never used: its training data is not licensed for
commercial use.

Similarity scale: dlib's docs call two faces the same person when the L2 distance of their raw descriptors
is below 0.6. The raw descriptors are not unit-norm (about 1.4-1.5 on photos), so this module L2-normalises
them and compares by cosine, the scale the band machinery (mining/pairs/band.py) works on. `bench/face_band.py`
measures both scales on labelled pairs; README "Face similarity band" has the table.

Single-face filter (reasons): no_face, many_faces (two detections above `min_score`), too_small (box side),
pose (eye-line roll, nose offset along the eye line as a yaw proxy), blurry (Laplacian variance of the
aligned chip).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.resources import Resources

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PINNED_SHA256 = {
    LANDMARKS_FILE: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    DESCRIPTOR_FILE: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}
CHIP_SIZE = 150
SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold on raw-descriptor L2 distance
DROP_REASONS = ("no_face", "many_faces", "too_small", "pose", "blurry")


@dataclass(frozen=True)
class FaceFilter:
    min_score: float = 0.5  # HOG detection score kept as a face (the astronaut's suit patch scores 0.12)
    min_face_px: int = 48  # shorter side of the detection box, in pixels
    max_roll_deg: float = 30.0  # eye-line angle from horizontal
    max_yaw: float = 0.35  # |nose offset along the eye line| / eye distance (0 = frontal)
    min_sharpness: float = 15.0  # Laplacian variance of the grey aligned chip
    upsample: int = 1  # detector upsampling passes (finds faces down to about 40 px)


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom (pixels, clipped to the image)
    score: float
    landmarks: np.ndarray  # (5, 2) float32, x, y
    chip: np.ndarray  # (150, 150, 3) uint8, aligned
    descriptor: np.ndarray  # (128,) float32, unit-norm
    raw_norm: float  # norm of dlib's raw descriptor (to convert cosine back to dlib's L2 distance)
    roll_deg: float = 0.0
    yaw: float = 0.0
    sharpness: float = 0.0


@dataclass
class FaceResult:
    face: Face | None
    reason: str | None  # None when kept; else one of DROP_REASONS
    detections: list[tuple[tuple[int, int, int, int], float]] = field(default_factory=list)


def package_model_dir() -> Path | None:
    """The `face_recognition_models` package's model folder (its __init__ needs pkg_resources: not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_file(models_dir: str | Path | None, name: str) -> Path:
    """The pinned weights file: <models_dir>/dlib/<name>, else the package's copy; checksum verified."""
    candidates = [Path(models_dir) / "dlib" / name] if models_dir is not None else []
    pkg = package_model_dir()
    if pkg is not None:
        candidates.append(pkg / name)
    for p in candidates:
        if p.is_file():
            actual = sha256_file(p)
            if actual != PINNED_SHA256[name]:
                raise ValueError(f"{p} has sha256 {actual}, pinned {PINNED_SHA256[name]}: refusing to load")
            return p
    raise MissingModelError(f"dlib face model {name} not found: put it in {Path(models_dir or 'models') / 'dlib'} "
                            f"or install face-recognition-models")


def laplacian_variance(grey: np.ndarray) -> float:
    g = grey.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(roll in degrees, yaw proxy) from dlib's 5 points: two corners per eye (0-1, 2-3), the nose base (4)."""
    e1, e2, nose = landmarks[0:2].mean(0), landmarks[2:4].mean(0), landmarks[4]
    if e1[0] > e2[0]:
        e1, e2 = e2, e1
    d = e2 - e1
    dist = float(np.hypot(*d))
    if dist < 1e-6:
        return 90.0, 1.0
    roll = math.degrees(math.atan2(float(d[1]), float(d[0])))
    yaw = float(np.dot(nose - (e1 + e2) / 2, d / dist)) / dist
    return abs(roll), abs(yaw)


def cosine_to_distance(cos: float | np.ndarray, norm_a: float, norm_b: float) -> float | np.ndarray:
    """dlib's raw L2 distance of two descriptors with these norms and this cosine."""
    return np.sqrt(np.maximum(norm_a**2 + norm_b**2 - 2 * norm_a * norm_b * np.asarray(cos), 0))


class DlibFaces(ModelWrapper):
    """The house wrapper: cheap __init__, setup() loads the two models once per worker, __call__ per image."""

    name = "dlib-faces-hog5-resnet"
    RESOURCES = Resources(cpus=1.0)

    def __init__(self, models_dir: str | Path | None = None, filt: FaceFilter | None = None, jitter: int = 0):
        self.models_dir = models_dir
        self.filt = filt or FaceFilter()
        self.jitter = jitter  # dlib's num_jitters for descriptors (0: one pass)
        self.version = "unloaded"
        self._detector = self._landmarks = self._encoder = None

    def setup(self) -> None:
        if self._encoder is not None:
            return
        import dlib

        lm, enc = model_file(self.models_dir, LANDMARKS_FILE), model_file(self.models_dir, DESCRIPTOR_FILE)
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(lm))
        self._encoder = dlib.face_recognition_model_v1(str(enc))
        self.version = (f"dlib{dlib.__version__}-lm{PINNED_SHA256[LANDMARKS_FILE][:12]}"
                        f"-rn{PINNED_SHA256[DESCRIPTOR_FILE][:12]}")

    def detect(self, img: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Boxes scoring at least `min_score`, best first."""
        self.setup()
        h, w = img.shape[:2]
        rects, scores, _ = self._detector.run(np.ascontiguousarray(img), self.filt.upsample, 0.0)
        out = [((max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom())), float(s))
               for r, s in zip(rects, scores) if s >= self.filt.min_score]
        return sorted(out, key=lambda b: -b[1])

    def describe(self, img: np.ndarray, box: tuple[int, int, int, int], score: float = 0.0) -> Face:
        """Landmarks, aligned chip and unit descriptor of the face in `box`."""
        import dlib

        self.setup()
        img = np.ascontiguousarray(img)
        shape = self._landmarks(img, dlib.rectangle(*box))
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        chip = np.asarray(dlib.get_face_chip(img, shape, size=CHIP_SIZE), np.uint8)
        raw = np.asarray(self._encoder.compute_face_descriptor(img, shape, self.jitter), np.float32)
        norm = float(np.linalg.norm(raw))
        roll, yaw = pose(pts)
        sharp = laplacian_variance(chip.astype(np.float32).mean(-1))
        return Face(box=box, score=score, landmarks=pts, chip=chip, descriptor=raw / max(norm, 1e-12),
                    raw_norm=norm, roll_deg=roll, yaw=yaw, sharpness=sharp)

    def __call__(self, img: np.ndarray) -> FaceResult:
        """One RGB uint8 image -> its single face, or the reason it has none usable."""
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"need an RGB uint8 image (h, w, 3), got {img.dtype} {img.shape}")
        dets = self.detect(img)
        if not dets:
            return FaceResult(None, "no_face", dets)
        if len(dets) > 1:
            return FaceResult(None, "many_faces", dets)
        box, score = dets[0]
        if min(box[2] - box[0], box[3] - box[1]) < self.filt.min_face_px:
            return FaceResult(None, "too_small", dets)
        face = self.describe(img, box, score)
        if face.roll_deg > self.filt.max_roll_deg or face.yaw > self.filt.max_yaw:
            return FaceResult(face, "pose", dets)
        if face.sharpness < self.filt.min_sharpness:
            return FaceResult(face, "blurry", dets)
        return FaceResult(face, None, dets)


def face_region_mask(shape: tuple[int, int], face: Face, grow: float = 0.25) -> np.ndarray:
    """Bool (h, w) mask of the face: its detection box and landmark hull, grown by `grow` x box side."""
    h, w = shape
    l, t, r, b = face.box
    xs = np.concatenate([[l, r], face.landmarks[:, 0]])
    ys = np.concatenate([[t, b], face.landmarks[:, 1]])
    pad = grow * max(r - l, b - t)
    x0, x1 = int(max(0, xs.min() - pad)), int(min(w, math.ceil(xs.max() + pad)))
    y0, y1 = int(max(0, ys.min() - pad * 1.2)), int(min(h, math.ceil(ys.max() + pad)))  # room for the hairline
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m
