"""Names for `{object_name}`: zero-shot over a label vocabulary with SigLIP's image and text towers.

With the SigLIP files in `<models_dir>/siglip/<model>` (open_clip_config.json, open_clip_model.safetensors and the
tokenizer files its config names), each object crop (its box on the source, the outside of the object whitened)
is scored against "a photo of a {label}." for every label, as open_clip scores an image-text pair: SigLIP's
sigmoid(logit_scale * cos + logit_bias), or a softmax over the vocabulary for a CLIP-style model without a bias.
The best label is used when its probability reaches `threshold`; otherwise, and always without the weights, the
templates use a generic wording ("the marked object"): a specific name is never invented.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mining.models.embedders import SIGLIP_FILES, SIGLIP_MODEL, MissingModelError, siglip_dir
from mining.models.base import ModelWrapper
from schemas.resources import Resources

# everyday objects a photo corpus shows (COCO-like categories and a few scene elements), singular nouns
VOCABULARY: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear",
    "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "kite", "skateboard",
    "surfboard", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "table",
    "toilet", "television", "laptop", "computer mouse", "keyboard", "cell phone", "microwave", "oven", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "toothbrush", "lamp", "window", "door",
    "tree", "flower", "rock", "sign", "rocket", "coffee cup", "helmet", "hat", "shoe", "ball", "guitar", "statue",
)
PROMPT = "a photo of a {}."
GENERIC = ("object-names:generic", "1")  # the lineage entry when no model names objects


def object_crop(image: np.ndarray, obj: np.ndarray, pad: float = 0.1) -> Image.Image:
    """The object's box (padded by `pad` of its size) on the source, pixels outside the object white."""
    ys, xs = np.nonzero(obj)
    if len(ys) == 0:
        raise ValueError("empty object mask")
    h, w = obj.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    py, px = int((y1 - y0) * pad), int((x1 - x0) * pad)
    y0, y1, x0, x1 = max(0, y0 - py), min(h, y1 + py), max(0, x0 - px), min(w, x1 + px)
    crop = np.where(obj[y0:y1, x0:x1, None], image[y0:y1, x0:x1], 255).astype(np.uint8)
    return Image.fromarray(crop)


class GenericNamer(ModelWrapper):
    """No model: every object gets the templates' generic wording."""

    name, version = GENERIC
    RESOURCES = Resources(cpus=0.0)

    def setup(self) -> None:
        pass

    def identity(self) -> str:
        return self.name

    def __call__(self, crops: Sequence[Image.Image]) -> list[tuple[str | None, float | None]]:
        return [(None, None)] * len(crops)


class SiglipNamer(ModelWrapper):
    """Zero-shot labels with both open_clip towers, loaded from `local-dir:<models_dir>/siglip/<model>`."""

    RESOURCES = Resources(cpus=0.5)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, models_dir: str | Path, model_name: str = SIGLIP_MODEL, threshold: float = 0.3,
                 vocabulary: Sequence[str] = VOCABULARY, device: str = "auto", batch_size: int = 32):
        self.folder = siglip_dir(models_dir, model_name)
        self.model_name = model_name
        self.threshold = threshold
        self.vocabulary = tuple(vocabulary)
        self.device_pref = device
        self.batch_size = batch_size
        self.name = f"object-names:siglip:{model_name}"
        self.version = "unloaded"
        self._model = None

    def missing(self) -> list[Path]:
        return [self.folder / f for f in SIGLIP_FILES if not (self.folder / f).is_file()]

    def identity(self) -> str:
        """What decides the names, without loading the model: the weights (sha256 of their first MiB and their
        size, as the embedder names its weights) and the vocabulary."""
        w = self.folder / SIGLIP_FILES[1]
        if w.is_file():
            with open(w, "rb") as f:
                weights = f"{hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]}-{w.stat().st_size}"
        else:
            weights = "absent"
        return f"{weights}-v{hashlib.sha256('|'.join(self.vocabulary).encode()).hexdigest()[:8]}"

    def setup(self) -> None:
        if self._model is not None:
            return
        import open_clip
        import torch

        if self.missing():
            raise MissingModelError(f"SigLIP weights not found: expected {', '.join(map(str, self.missing()))}")
        ref = f"local-dir:{self.folder}"
        model, _, preprocess = open_clip.create_model_and_transforms(ref)
        try:
            tokenizer = open_clip.get_tokenizer(ref)
        except Exception as e:  # the SigLIP tokenizer's files: from the model folder or a pre-filled hub cache
            raise MissingModelError(f"the text tokenizer of {self.folder} could not be loaded offline ({e}); put "
                                    f"the tokenizer files of timm/{self.model_name} in the hub cache") from e
        self.device = torch.device("cuda" if self.device_pref == "auto" and torch.cuda.is_available()
                                   else ("cpu" if self.device_pref == "auto" else self.device_pref))
        model = model.eval().requires_grad_(False).to(self.device)
        with torch.inference_mode():
            text = model.encode_text(tokenizer([PROMPT.format(v) for v in self.vocabulary]).to(self.device))
            self._text = torch.nn.functional.normalize(text.float(), dim=-1)
        self._scale = float(model.logit_scale.exp())
        bias = getattr(model, "logit_bias", None)
        self._bias = None if bias is None else float(bias)
        self._model, self._preprocess = model, preprocess
        with open(self.folder / SIGLIP_FILES[1], "rb") as f:
            weights = hashlib.sha256(f.read(1 << 20)).hexdigest()[:12]
        vocab = hashlib.sha256("|".join(self.vocabulary).encode()).hexdigest()[:8]
        self.version = f"{weights}-v{vocab}-t{self.threshold}"

    def probabilities(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """(n, len(vocabulary)) label probabilities: sigmoid with SigLIP's bias, else a softmax."""
        import torch

        self.setup()
        out = []
        for i in range(0, len(crops), self.batch_size):
            batch = torch.stack([self._preprocess(c.convert("RGB")) for c in crops[i : i + self.batch_size]])
            with torch.inference_mode():
                img = torch.nn.functional.normalize(self._model.encode_image(batch.to(self.device)).float(), dim=-1)
                logits = self._scale * img @ self._text.T
                out.append((torch.sigmoid(logits + self._bias) if self._bias is not None
                            else logits.softmax(dim=-1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.vocabulary)), np.float32)

    def __call__(self, crops: Sequence[Image.Image]) -> list[tuple[str | None, float | None]]:
        """(label or None when below the threshold, its probability) per crop."""
        p = self.probabilities(crops)
        out: list[tuple[str | None, float | None]] = []
        for row in p:
            j = int(row.argmax())
            out.append((self.vocabulary[j] if row[j] >= self.threshold else None, float(row[j])))
        return out


def make_namer(kind: str, models_dir: str | Path, threshold: float = 0.3):
    """"auto": SigLIP when its files are in the models directory and load, else generic; "siglip": SigLIP or
    a clear error; "generic": no model."""
    if kind == "generic":
        return GenericNamer()
    namer = SiglipNamer(models_dir, threshold=threshold)
    if kind == "siglip":
        return namer
    if kind != "auto":
        raise ValueError(f"unknown object namer {kind!r}; use auto, siglip or generic")
    return namer if not namer.missing() else GenericNamer()
