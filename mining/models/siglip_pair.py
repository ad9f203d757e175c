"""SigLIP with both towers, for the scores of an edit pair: image-image similarity and the instruction direction.

The direction score is the CLIP-direction measure of the editing-data literature (InstructPix2Pix's filter):
the cosine between the change of the image embedding (target - edit) and the instruction's text embedding
direction. With no caption of the edit image to subtract, the text direction is the instruction's embedding
minus the embedding of an empty prompt (the text tower's origin), so an instruction that says nothing scores ~0.
Loaded from the same files as the embedder (`<models_dir>/siglip/<model>`); no fallback: without the weights
the scorer is absent and the scores are not written.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mining.models.base import ModelWrapper
from mining.models.embedders import SIGLIP_FILES, SIGLIP_MODEL, MissingModelError, _l2, siglip_dir
from schemas.resources import Resources

_INDICATOR = re.compile(r"\{image\d*\}")


class SiglipPairScorer(ModelWrapper):
    RESOURCES = Resources(cpus=1.0)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=0.5)

    def __init__(self, models_dir: str | Path, model_name: str = SIGLIP_MODEL, device: str = "auto"):
        self.folder = siglip_dir(models_dir, model_name)
        self.model_name = model_name
        self.device_pref = device
        self.name = f"siglip-pair:{model_name}"
        self.version = "unloaded"
        self._model = None

    def missing(self) -> list[Path]:
        return [self.folder / f for f in SIGLIP_FILES if not (self.folder / f).is_file()]

    def setup(self) -> None:
        if self._model is not None:
            return
        import open_clip
        import torch

        if self.missing():
            raise MissingModelError(f"SigLIP weights not found: expected {', '.join(map(str, self.missing()))}")
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{self.folder}")
        self.device = torch.device("cuda" if self.device_pref == "auto" and torch.cuda.is_available()
                                   else ("cpu" if self.device_pref == "auto" else self.device_pref))
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._model = model.eval().requires_grad_(False).to(self.device, self.dtype)
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(f"local-dir:{self.folder}")
        with open(self.folder / SIGLIP_FILES[1], "rb") as f:
            self.version = hashlib.sha256(f.read(1 << 20)).hexdigest()[:12]
        self._origin = self.texts([""])[0]

    def images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        self.setup()
        batch = torch.stack([self._preprocess(im.convert("RGB")) for im in images]).to(self.device, self.dtype)
        with torch.inference_mode():
            return _l2(self._model.encode_image(batch).float().cpu().numpy())

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self._tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            return _l2(self._model.encode_text(tokens).float().cpu().numpy())

    def __call__(self, edit: Image.Image, target: Image.Image, instruction: str) -> dict[str, float]:
        """{'siglip_similarity': cos(edit, target), 'clip_direction': cos(target - edit, text - origin)}."""
        self.setup()
        e, t = self.images([edit, target])
        text = _INDICATOR.sub("the image", instruction)
        d_img = t - e
        d_txt = self.texts([text])[0] - self._origin
        norm = float(np.linalg.norm(d_img) * np.linalg.norm(d_txt))
        return {"siglip_similarity": round(float(e @ t), 5),
                "clip_direction": round(float(d_img @ d_txt) / norm, 5) if norm > 1e-12 else 0.0}
