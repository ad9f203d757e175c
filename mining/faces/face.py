"""Face features for facial-editing pairs: an ArcFace-compatible model from the models directory.

Interface (the one ArcFace/insightface recognition models share): aligned face crops, RGB, 112x112,
normalised as (x - 127.5) / 128, in; one embedding per face out, compared by cosine similarity.
The model is a TorchScript file, which runs code, so it loads only with a pinned sha256 beside it
(`<name>.pt` + `<name>.sha256`). Detection and alignment are upstream of this wrapper.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mining.models.embedders import MissingModelError, _l2
from mining.models.base import ModelWrapper
from schemas.resources import Resources

FACE_SIZE = 112


def face_model_paths(models_dir: str | Path, name: str = "arcface") -> tuple[Path, Path]:
    folder = Path(models_dir) / "face"
    return folder / f"{name}.pt", folder / f"{name}.sha256"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FaceEmbedder(ModelWrapper):
    RESOURCES = Resources(cpus=0.5)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=0.25)

    def __init__(self, models_dir: str | Path, name: str = "arcface", device: str = "auto", batch_size: int = 64):
        self.model_path, self.sha_path = face_model_paths(models_dir, name)
        self.name = f"face:{name}"
        self.version = "unloaded"
        self.device_pref = device
        self.batch_size = batch_size
        self._model = None

    def setup(self) -> None:
        import torch

        for p in (self.model_path, self.sha_path):
            if not p.is_file():
                raise MissingModelError(f"face model not found: expected {self.model_path} (TorchScript, "
                                        f"ArcFace interface) and {self.sha_path} (its sha256)")
        pinned = self.sha_path.read_text().split()[0].strip().lower()
        actual = sha256_file(self.model_path)
        if actual != pinned:
            raise ValueError(f"{self.model_path} has sha256 {actual}, but {self.sha_path} pins {pinned}: refusing to load")
        self.device = torch.device("cuda" if self.device_pref == "auto" and torch.cuda.is_available()
                                   else ("cpu" if self.device_pref == "auto" else self.device_pref))
        self._model = torch.jit.load(str(self.model_path), map_location=self.device).eval()
        self.version = actual[:12]

    def __call__(self, faces: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if self._model is None:
            self.setup()
        out = []
        for i in range(0, len(faces), self.batch_size):
            arr = np.stack([np.asarray(f.convert("RGB").resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR),
                                       dtype=np.float32) for f in faces[i : i + self.batch_size]])
            x = torch.from_numpy((arr - 127.5) / 128.0).permute(0, 3, 1, 2).to(self.device)
            with torch.inference_mode():
                out.append(self._model(x).float().cpu().numpy())
        return _l2(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)


def face_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) L2-normalised embedding matrices."""
    return np.einsum("nd,nd->n", a, b)
