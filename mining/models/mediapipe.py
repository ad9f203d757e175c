"""MediaPipe's bundled person models (selfie segmentation, BlazePose full) run with LiteRT, without mediapipe.

mediapipe 0.10.21 ships these .tflite files inside its wheel but pins numpy<2, so this module takes the files
out of the wheel once (`fetch`, or `python -m mining.models.mediapipe fetch`) into `<models_dir>/mediapipe/`, pins
each by sha256, and does MediaPipe's small pre/post-processing itself (graph options in `mining.maps.mp_pose`).
Apache-2.0 models; interface for the consumers:
- `SelfieSegmenter()(rgb uint8 (H, W, 3)) -> float32 (H, W)` person probability; `person_region` -> Region.
- `PoseEstimator()(rgb) -> list[(18, 3) float32]`: OpenPose-18 joints (x, y, confidence) in pixels, at most
  one person (BlazePose is single-person); `draw_openpose(h, w, people)` draws them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.config.run import default_models_dir
from schemas.resources import Resources
from mining.maps.mp_pose import (DETECT_SIZE, LANDMARK_SIZE, decode_detections, detection_roi, landmarks_from_outputs,
                            letterbox, roi_crop, to_openpose18, weighted_nms)
from mining.maps.openpose import draw_openpose
from mining.objects.segment import ChecksumError, Region

__all__ = ["MP_VERSION", "MP_FILES", "mediapipe_dir", "mp_model_files", "fetch", "check_files", "SelfieSegmenter", "person_region", "PersonSegmenter",
           "PoseEstimator", "draw_openpose", "to_openpose18"]

MP_VERSION = "0.10.21"
# file name under <models_dir>/mediapipe -> (member of the wheel, sha256)
MP_FILES = {
    "selfie_segmentation.tflite": ("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                                   "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "pose_detection.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite",
                              "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                                  "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}
# the wheel is platform-specific but its .tflite files are not: always ask pip for this one
WHEEL_PLATFORM = ("manylinux_2_28_x86_64", "311")
FETCH_HINT = "python -m mining.models.mediapipe fetch --models {models}"


def mediapipe_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / "mediapipe"


def mp_model_files(models_dir: str | Path, names: tuple[str, ...] | None = None) -> tuple[Path, ...]:
    return tuple(mediapipe_dir(models_dir) / n for n in (names or tuple(MP_FILES)))


def _sha256(data_or_path: bytes | Path) -> str:
    if isinstance(data_or_path, bytes):
        return hashlib.sha256(data_or_path).hexdigest()
    h = hashlib.sha256()
    with open(data_or_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_files(models_dir: str | Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """The named files, each present and matching its pinned sha256; else a one-line error naming the fix."""
    folder = mediapipe_dir(models_dir)
    out = {}
    for name in names or tuple(MP_FILES):
        path = folder / name
        if not path.is_file():
            raise MissingModelError(f"MediaPipe model {path} not found: run `{FETCH_HINT.format(models=models_dir)}`"
                                    f" (takes it out of the mediapipe=={MP_VERSION} wheel)")
        got = _sha256(path)
        if got != MP_FILES[name][1]:
            raise ChecksumError(f"{path} has sha256 {got}, not the pinned {MP_FILES[name][1]} of mediapipe=="
                                f"{MP_VERSION}'s {name}: refusing to load it (delete it and fetch again)")
        out[name] = path
    return out


def _valid(path: Path, sha: str) -> bool:
    return path.is_file() and _sha256(path) == sha


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MP_VERSION}", "--no-deps", "--only-binary=:all:",
           "--platform", WHEEL_PLATFORM[0], "--python-version", WHEEL_PLATFORM[1], "-d", str(into), "-q"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob(f"mediapipe-{MP_VERSION}-*.whl"))
    if res.returncode != 0 or not wheels:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise RuntimeError(f"could not download mediapipe=={MP_VERSION} with pip: {tail[0]}")
    return wheels[0]


def fetch(models_dir: str | Path, wheel: str | Path | None = None) -> list[Path]:
    """Put the pinned .tflite files under `<models_dir>/mediapipe/`; returns those written (none when all
    are already present and valid). Downloads the wheel with pip unless `wheel` names a local copy."""
    folder = mediapipe_dir(models_dir)
    todo = {n: v for n, v in MP_FILES.items() if not _valid(folder / n, v[1])}
    if not todo:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        whl = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
        if not whl.is_file():
            raise FileNotFoundError(f"wheel {whl} not found")
        written = []
        with zipfile.ZipFile(whl) as zf:
            members = set(zf.namelist())
            for name, (member, sha) in todo.items():
                if member not in members:
                    raise ValueError(f"{whl.name} has no {member}: not a mediapipe=={MP_VERSION} wheel")
                data = zf.read(member)
                if _sha256(data) != sha:
                    raise ChecksumError(f"{member} in {whl.name} has sha256 {_sha256(data)}, not the pinned {sha}")
                part = folder / f".{name}.part"
                part.write_bytes(data)
                os.replace(part, folder / name)
                written.append(folder / name)
    return written


def _interpreter(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def _run(it, x: np.ndarray) -> list[np.ndarray]:
    it.set_tensor(it.get_input_details()[0]["index"], x[None].astype(np.float32))
    it.invoke()
    # outputs in name order (Identity, Identity_1, ...), batch dimension dropped
    return [it.get_tensor(d["index"])[0] for d in sorted(it.get_output_details(), key=lambda d: d["name"])]


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {got}")
    if min(rgb.shape[:2]) < 2:
        raise ValueError(f"image too small: {rgb.shape[:2]}")
    return np.ascontiguousarray(rgb)


class SelfieSegmenter(ModelWrapper):
    """MediaPipe selfie segmentation (general, 256x256 input): a person probability per pixel."""

    name = "mediapipe-selfie-segmentation"

    def __init__(self, models_dir: str | Path | None = None, threads: int = 1):
        self.models_dir = Path(models_dir if models_dir is not None else default_models_dir())
        self.threads = threads
        self.version = f"{MP_VERSION}/{MP_FILES['selfie_segmentation.tflite'][1][:12]}"
        self._it = None

    def resources(self) -> Resources:
        return Resources(cpus=float(self.threads))

    def setup(self) -> None:
        if self._it is None:
            path = check_files(self.models_dir, ("selfie_segmentation.tflite",))["selfie_segmentation.tflite"]
            self._it = _interpreter(path, self.threads)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        rgb = _check_rgb(rgb)
        self.setup()
        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        prob = _run(self._it, x)[0][..., 0]
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(prob, 0.0, 1.0).astype(np.float32)


def person_region(prob: np.ndarray, threshold: float = 0.5, min_area_frac: float = 0.01) -> Region | None:
    """The person mask of a selfie-segmentation map as a Region (score: mean probability inside the mask), or
    None when less than `min_area_frac` of the image is person."""
    mask = prob >= threshold
    if mask.mean() < min_area_frac:
        return None
    return Region(mask=mask, score=float(prob[mask].mean()))


class PersonSegmenter(ModelWrapper):
    """The selfie segmenter as a `mining.objects.segment.Segmenter`: at most one Region, the people in the image."""

    name = SelfieSegmenter.name

    def __init__(self, models_dir: str | Path | None = None, threads: int = 1, threshold: float = 0.5,
                 min_area_frac: float = 0.01):
        self.selfie = SelfieSegmenter(models_dir, threads)
        self.version = self.selfie.version
        self.threshold, self.min_area_frac = threshold, min_area_frac

    def resources(self) -> Resources:
        return self.selfie.resources()

    def setup(self) -> None:
        self.selfie.setup()

    def __call__(self, image: np.ndarray) -> list[Region]:
        region = person_region(self.selfie(image), self.threshold, self.min_area_frac)
        return [] if region is None else [region]


class PoseEstimator(ModelWrapper):
    """BlazePose full (pose_detection + pose_landmark_full), one person, as OpenPose-18 joints in pixels."""

    name = "mediapipe-blazepose-full"

    def __init__(self, models_dir: str | Path | None = None, threads: int = 1, min_detection: float = 0.5,
                 min_presence: float = 0.5):
        self.models_dir = Path(models_dir if models_dir is not None else default_models_dir())
        self.threads = threads
        self.min_detection = min_detection
        self.min_presence = min_presence
        self.version = (f"{MP_VERSION}/{MP_FILES['pose_detection.tflite'][1][:8]}"
                        f"+{MP_FILES['pose_landmark_full.tflite'][1][:8]}")
        self._det = self._lmk = None

    def resources(self) -> Resources:
        return Resources(cpus=float(self.threads))

    def setup(self) -> None:
        if self._det is None:
            paths = check_files(self.models_dir, ("pose_detection.tflite", "pose_landmark_full.tflite"))
            self._det = _interpreter(paths["pose_detection.tflite"], self.threads)
            self._lmk = _interpreter(paths["pose_landmark_full.tflite"], self.threads)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """The 33 BlazePose landmarks (x, y in pixels, visibility, presence), or None without a person."""
        rgb = _check_rgb(rgb)
        self.setup()
        h, w = rgb.shape[:2]
        x, pad = letterbox(rgb, DETECT_SIZE)
        raw_boxes, raw_scores = _run(self._det, x.astype(np.float32) / 127.5 - 1.0)
        dets = weighted_nms(decode_detections(raw_boxes, raw_scores[:, 0], pad, self.min_detection))
        if not dets:
            return None
        roi = detection_roi(dets[0].keypoints, w, h)
        crop = roi_crop(rgb, roi, LANDMARK_SIZE).astype(np.float32) / 255.0
        lm, flag, _seg, heat, _world = _run(self._lmk, crop)
        if float(flag.reshape(-1)[0]) < self.min_presence:
            return None
        return landmarks_from_outputs(lm, heat, roi)

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        lms = self.landmarks(rgb)
        return [] if lms is None else [to_openpose18(lms)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mining.models.mediapipe", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help=f"take the pinned .tflite files out of the mediapipe=={MP_VERSION} wheel")
    f.add_argument("--models", default=default_models_dir(), help="models directory")
    f.add_argument("--wheel", default=None, help="a local mediapipe wheel instead of downloading one")
    args = ap.parse_args(argv)
    try:
        written = fetch(args.models, args.wheel)
    except Exception as e:  # noqa: BLE001 - the CLI reports any failure in one line
        print(f"mediapipe models not fetched: {e}", file=sys.stderr)
        return 1
    where = mediapipe_dir(args.models)
    print(f"wrote {len(written)} file(s) to {where}" if written else f"mediapipe models already in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
