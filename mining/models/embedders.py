"""Image embedders: SigLIP (ViT-B-16-SigLIP image tower through open_clip) and an offline fallback.

Both return L2-normalised float32 rows and say who they are (name, version), which every stored vector
records. Model wrappers follow the house pattern: cheap __init__, setup() loads, batch __call__,
declared resources.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image
from scipy.fft import dctn

from mining.models.base import ModelWrapper
from schemas.resources import Resources


class ImageEmbedder(Protocol):
    name: str
    version: str
    dim: int
    band: tuple[float, float]  # similarity band its features are calibrated for (lo, hi)

    def resources(self) -> Resources: ...
    def setup(self) -> None: ...
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class MissingModelError(FileNotFoundError):
    pass


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


SIGLIP_MODEL = "ViT-B-16-SigLIP"
SIGLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")


def siglip_dir(models_dir: str | Path, model_name: str = SIGLIP_MODEL) -> Path:
    return Path(models_dir) / "siglip" / model_name


class SiglipEmbedder(ModelWrapper):
    """open_clip image tower, loaded with `local-dir:<models_dir>/siglip/<model>` (the layout of the
    `timm/ViT-B-16-SigLIP` repository: open_clip_config.json + open_clip_model.safetensors)."""

    band = (0.85, 0.98)  # ACE §3.1 / Table 4, for SigLIP features
    RESOURCES = Resources(cpus=0.5)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, models_dir: str | Path, model_name: str = SIGLIP_MODEL, device: str = "auto",
                 batch_size: int = 32):
        self.folder = siglip_dir(models_dir, model_name)
        self.model_name = model_name
        self.device_pref = device
        self.batch_size = batch_size
        self.name = f"siglip:{model_name}"
        self.version = "unloaded"
        self.dim = 0
        self._visual = None
        self._preprocess = None

    def missing(self) -> list[Path]:
        return [self.folder / f for f in SIGLIP_FILES if not (self.folder / f).is_file()]

    def setup(self) -> None:
        import open_clip
        import torch

        if self.missing():
            raise MissingModelError(
                f"SigLIP weights not found: expected {', '.join(str(p) for p in self.missing())} "
                f"(the files of the timm/{self.model_name} repository)")
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{self.folder}")
        self.device = torch.device("cuda" if self.device_pref == "auto" and torch.cuda.is_available()
                                   else ("cpu" if self.device_pref == "auto" else self.device_pref))
        visual = model.visual.eval().requires_grad_(False)
        del model  # image tower only: the text tower is never needed here
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._visual = visual.to(self.device, self.dtype)
        self._preprocess = preprocess
        with open(self.folder / SIGLIP_FILES[1], "rb") as f:
            self.version = hashlib.sha256(f.read(1 << 20)).hexdigest()[:12]  # weights identity, first MiB
        cfg = json.loads((self.folder / SIGLIP_FILES[0]).read_text())
        self.dim = int(cfg["model_cfg"]["embed_dim"])

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if self._visual is None:
            self.setup()
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.stack([self._preprocess(im.convert("RGB")) for im in images[i : i + self.batch_size]])
            with torch.inference_mode():
                feats = self._visual(batch.to(self.device, self.dtype))
            out.append(feats.float().cpu().numpy())
        return _l2(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


class OfflineEmbedder(ModelWrapper):
    """Hand-made global features for when no SigLIP weights are present (the demo, CI).

    Mirror-symmetric and anti-symmetric low-frequency DCT of the contrast-normalised grey image (central
    85%, which rotation corners and most crops leave alone), a grey-level histogram and a hue-saturation
    histogram. It groups near-duplicates and edited variants of one photo; it knows nothing of semantics.
    Its similarities live on another scale than SigLIP's, so it declares its own band, calibrated on the
    demo corpus' families.
    """

    name = "offline-dct-hist"
    version = "1"
    band = (0.80, 0.985)
    _K = 5
    _W = (1.0, 0.35, 0.6, 0.3)  # weights of the four parts
    RESOURCES = Resources(cpus=0.5)

    def __init__(self) -> None:
        self.dim = 2 * (self._K * self._K - 1) + 24 + 48

    def setup(self) -> None:
        return None

    def _one(self, im: Image.Image) -> np.ndarray:
        w, h = im.size
        cw, ch = max(1, int(w * 0.85)), max(1, int(h * 0.85))
        c = im.convert("RGB").crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        g = np.asarray(c.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
        g = (g - g.mean()) / (g.std() + 1e-6)
        k = self._K
        sym = dctn((g + g[:, ::-1]) / 2, norm="ortho")[:k, :k].ravel()[1:]
        asym = dctn((g - g[:, ::-1]) / 2, norm="ortho")[:k, :k].ravel()[1:]
        grey = np.sqrt(np.histogram(np.clip(g, -3, 3), bins=24, range=(-3, 3))[0].astype(np.float64))
        hsv = np.asarray(c.convert("HSV").resize((32, 32), Image.Resampling.BOX), dtype=np.float64).reshape(-1, 3)
        hue_sat = np.sqrt(np.histogram2d(hsv[:, 0], hsv[:, 1], bins=(12, 4), range=((0, 256), (0, 256)))[0].ravel())
        parts = [p / (np.linalg.norm(p) + 1e-12) * wt for p, wt in zip((sym, asym, grey, hue_sat), self._W)]
        return np.concatenate(parts)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return _l2(np.stack([self._one(im) for im in images]))


def make_embedder(kind: str, models_dir: str | Path) -> ImageEmbedder:
    """'siglip', 'offline', or 'auto' (SigLIP when its weights are present, else the offline fallback)."""
    if kind == "offline":
        return OfflineEmbedder()
    sig = SiglipEmbedder(models_dir)
    if kind == "siglip" or (kind == "auto" and not sig.missing()):
        return sig
    if kind == "auto":
        return OfflineEmbedder()
    raise ValueError(f"unknown embedder {kind!r}; use siglip, offline or auto")
