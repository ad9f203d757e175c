"""Monocular depth maps: a DPT or Depth-Anything model from the models directory through transformers'
own classes (`AutoModelForDepthEstimation`), safetensors only.

    <models_dir>/depth/<name>/config.json + model.safetensors  [+ preprocessor_config.json]

The image is resized to a square of the model's input size (DPT's reassembly needs a square grid),
normalised with the folder's preprocessor mean/std (ImageNet's when there is none), and the predicted
relative depth is resized back to the source's size and stretched to 0..255 (near = bright), three equal
channels. The house pattern: cheap __init__, setup() loads once, __call__ per image, resources().
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.resources import Resources

WEIGHTS = "model.safetensors"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def depth_dir(models_dir: str | Path, name: str) -> Path:
    return Path(models_dir) / "depth" / name


def depth_available(models_dir: str | Path, name: str) -> bool:
    d = depth_dir(models_dir, name)
    return (d / "config.json").is_file() and (d / WEIGHTS).is_file()


class DepthEstimator(ModelWrapper):
    """`name` is the folder under <models_dir>/depth; `sha256` pins model.safetensors (None: its digest
    is computed and recorded as the version, not checked)."""

    RESOURCES = Resources(cpus=1.0)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, models_dir: str | Path, name: str = "depth-anything-v2-small", sha256: str | None = None,
                 input_size: int | None = None, device: str = "auto"):
        self.folder = depth_dir(models_dir, name)
        self.name = f"depth-{name}"
        self.sha256 = sha256
        self.input_size = input_size
        self.device_pref = device
        self.version = (sha256 or "unpinned")[:12]
        self._model = None

    def available(self) -> bool:
        return (self.folder / "config.json").is_file() and (self.folder / WEIGHTS).is_file()

    def identity(self) -> str | None:
        """What decides the depth maps, without loading: the pin, or the weights' first MiB and size when
        unpinned (other weights under the same folder are another model); None when absent."""
        if not self.available():
            return None
        if self.sha256:
            return self.sha256
        import hashlib

        w = self.folder / WEIGHTS
        with open(w, "rb") as f:
            return f"{hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]}-{w.stat().st_size}"

    def setup(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForDepthEstimation

        if not self.available():
            raise MissingModelError(f"depth model not found: expected {self.folder}/config.json and {WEIGHTS} "
                                    "(a DPT or Depth-Anything folder saved with safetensors)")
        digest = file_sha256(self.folder / WEIGHTS)
        if self.sha256 is not None and digest != self.sha256:
            raise ValueError(f"{self.folder / WEIGHTS} has sha256 {digest}, not the pinned {self.sha256}: "
                             "refusing to load it")
        self.version = digest[:12]
        model = AutoModelForDepthEstimation.from_pretrained(str(self.folder), use_safetensors=True)
        dev = self.device_pref if self.device_pref != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model.to(dev).eval()
        self._device = dev
        mean, std = IMAGENET
        pre = self.folder / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            mean, std = p.get("image_mean", mean), p.get("image_std", std)
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)
        self._size = self.input_size or self._default_size(model.config)

    @staticmethod
    def _default_size(config) -> int:
        backbone = getattr(config, "backbone_config", None)
        size = getattr(config, "image_size", None) or getattr(backbone, "image_size", None) or 384
        patch = getattr(config, "patch_size", None) or getattr(backbone, "patch_size", None) or 1
        return max(patch, int(size) // patch * patch)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        import cv2
        import torch

        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"depth takes an RGB uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
        self.setup()
        h, w = img.shape[:2]
        x = cv2.resize(img, (self._size, self._size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
        x = (x - self._mean) / self._std
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self._device)
        with torch.inference_mode():
            pred = self._model(pixel_values=t).predicted_depth  # (1, h', w')
            pred = torch.nn.functional.interpolate(pred[:, None].float(), size=(h, w), mode="bicubic",
                                                   align_corners=False)[0, 0].cpu().numpy()
        lo, hi = float(pred.min()), float(pred.max())
        d = np.zeros((h, w), np.uint8) if hi - lo < 1e-12 else np.clip(np.rint((pred - lo) / (hi - lo) * 255), 0,
                                                                       255).astype(np.uint8)
        return np.repeat(d[..., None], 3, axis=2)
