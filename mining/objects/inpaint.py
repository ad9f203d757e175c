"""Inpainting for synthesis: big-lama (TorchScript, from the models directory, md5 pinned) or cv2.inpaint.

Every inpainter returns the source with only the masked pixels replaced: outside the mask the result is
bit-identical to the source, whatever the model did there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.resources import Resources
from mining.objects.segment import check_md5

LAMA_FILE = "big-lama.pt"
LAMA_MD5 = "e3aa4aaa15225a33ec84f9f4bc47e500"  # the released big-lama TorchScript file


class Inpainter(Protocol):
    name: str
    version: str

    def resources(self) -> Resources: ...
    def setup(self) -> None: ...
    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a boolean mask by `px` pixels (an elliptical kernel): inpainting then covers the object's edge."""
    import cv2

    if px <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def composite(source: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`filled` inside the mask, `source` (the very bytes) outside."""
    out = source.copy()
    out[mask] = filled[mask]
    return out


def lama_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / "lama" / LAMA_FILE


class LamaInpainter(ModelWrapper):
    """big-lama as TorchScript: `model(image[1,3,H,W] in 0..1, mask[1,1,H,W] in {0,1}) -> [1,3,H,W] in 0..1`,
    H and W padded (symmetric) to a multiple of 8. The checksum is verified before the file is loaded."""

    RESOURCES = Resources(cpus=0.5)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, path: str | Path, md5: str = LAMA_MD5, device: str = "auto"):
        self.path = Path(path)
        self.md5 = md5
        self.device_pref = device
        self.name = "lama-big-lama"
        self.version = md5[:12]
        self._model = None

    def setup(self) -> None:
        if self._model is not None:
            return
        import torch

        if not self.path.is_file():
            raise MissingModelError(f"LaMa weights not found: expected {self.path} (the released {LAMA_FILE}, "
                                    f"md5 {LAMA_MD5})")
        check_md5(self.path, self.md5, "big-lama")
        self.device = torch.device(self.device_pref if self.device_pref != "auto"
                                   else ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model = torch.jit.load(str(self.path), map_location=self.device).eval()

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        self.setup()
        h, w = mask.shape
        ph, pw = -h % 8, -w % 8
        img = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
        m = np.pad(mask.astype(np.float32), ((0, ph), (0, pw)), mode="symmetric")
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(self.device)  # b c h w
        mt = torch.from_numpy(m)[None, None].to(self.device)  # b 1 h w
        with torch.inference_mode():
            y = self._model(x, mt)
        filled = (y[0, :, :h, :w].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        return composite(image, filled, mask)


class Cv2Inpainter(ModelWrapper):
    """OpenCV's Telea inpainting: the offline fallback (fast, smooth fills; no texture synthesis)."""

    name = "cv2-inpaint-telea"
    RESOURCES = Resources(cpus=0.5)

    def __init__(self, radius: int = 5):
        import cv2

        self.radius = radius
        self.version = f"{cv2.__version__}-r{radius}"

    def setup(self) -> None:
        return None

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import cv2

        filled = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8) * 255, self.radius, cv2.INPAINT_TELEA)
        return composite(image, filled, mask)


def make_inpainter(kind: str, models_dir: str | Path) -> Inpainter:
    """'lama', 'cv2', or 'auto' (big-lama when its file is in <models_dir>/lama/)."""
    if kind == "cv2":
        return Cv2Inpainter()
    path = lama_path(models_dir)
    if kind == "lama" or (kind == "auto" and path.is_file()):
        return LamaInpainter(path)
    if kind == "auto":
        return Cv2Inpainter()
    raise ValueError(f"unknown inpainter {kind!r}; use lama, cv2 or auto")
