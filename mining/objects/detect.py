"""Open-vocabulary object detection (ACE App. B.5.2, Grounded-SAM style): a detector tags each image with labels
from a vocabulary and boxes; the boxes prompt SAM and the label names the object (`{object_name}`, lineage).

The detector is transformers' zero-shot object detection (OWLv2 by default; Grounding DINO loads through the
same Auto classes), read from `<models_dir>/detector/<model>` as saved by `save_pretrained` (config.json,
model.safetensors, the processor and tokenizer files): `aceforge models pull owlv2` puts the released one there.
Safetensors only. Without the folder the class-agnostic segmenter stays (SAM's automatic masks or the offline
region proposer) and objects are named as before (the SigLIP namer, or generic wording).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mining.models.base import ModelWrapper
from mining.models.embedders import MissingModelError
from mining.objects.segment import Region, SamSegmenter
from schemas.resources import Resources

DETECTOR_MODEL = "owlv2-base-patch16-ensemble"  # folder under <models_dir>/detector (google/<this> on the Hub)
DETECTOR_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
                  "vocab.json", "merges.txt", "special_tokens_map.json")
PROMPT = "a photo of a {}"


def detector_dir(models_dir: str | Path, name: str = DETECTOR_MODEL) -> Path:
    return Path(models_dir) / "detector" / name


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, inside the image
    label: str
    score: float


class OpenVocabDetector(ModelWrapper):
    """transformers `AutoModelForZeroShotObjectDetection` + `AutoProcessor` from a local folder; each image is
    queried with "a photo of a {label}" for every label of `vocabulary`; boxes at `threshold` and above, clipped
    to the image, at least `min_side_px` on each side, overlapping ones (IoU > `nms_iou`, any label) suppressed,
    at most `max_detections` per image, best first."""

    RESOURCES = Resources(cpus=1.0)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, folder: str | Path, vocabulary: Sequence[str], threshold: float = 0.2,
                 max_detections: int = 8, nms_iou: float = 0.5, min_side_px: int = 4, device: str = "auto"):
        self.folder = Path(folder)
        self.vocabulary = tuple(vocabulary)
        if not self.vocabulary:
            raise ValueError("the detector needs a non-empty vocabulary")
        self.threshold, self.max_detections, self.nms_iou = threshold, max_detections, nms_iou
        self.min_side_px = min_side_px
        self.device_pref = device
        self.name = f"detector:{self.folder.name}"
        self.version = self.identity() or "absent"  # config only: decides the stage's version before setup
        self._model = None

    def available(self) -> bool:
        return (self.folder / "config.json").is_file() and (self.folder / "model.safetensors").is_file()

    def identity(self) -> str | None:
        """The weights' first MiB and size, and the vocabulary: what decides the detections (None: absent)."""
        if not self.available():
            return None
        w = self.folder / "model.safetensors"
        with open(w, "rb") as f:
            head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
        vocab = hashlib.sha256("\n".join(self.vocabulary).encode()).hexdigest()[:8]
        return f"{head}-{w.stat().st_size}-v{vocab}"

    def setup(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if not self.available():
            raise MissingModelError(f"open-vocabulary detector not found: expected {self.folder}/config.json and "
                                    "model.safetensors (`aceforge models pull owlv2`)")
        self.processor = AutoProcessor.from_pretrained(str(self.folder))
        model = AutoModelForZeroShotObjectDetection.from_pretrained(str(self.folder), use_safetensors=True)
        dev = self.device_pref if self.device_pref != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model.to(dev).eval()
        self._device = dev
        self._square = model.config.model_type == "owlv2"  # OWLv2 pads to a square: boxes are in its frame
        self._prompts = [PROMPT.format(v) for v in self.vocabulary]  # the same queries for every image: once
        self._queries = self.processor(text=[self._prompts], return_tensors="pt", padding=True, truncation=True)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        import torch
        from torchvision.ops import nms

        self.setup()
        h, w = image.shape[:2]
        pixels = self.processor(images=[np.require(image, requirements=["C", "W"])], return_tensors="pt")
        inputs = {**self._queries, **pixels}
        with torch.inference_mode():
            outputs = self._model(**{k: v.to(self._device) for k, v in inputs.items()})
        side = (max(h, w), max(h, w)) if self._square else (h, w)
        res = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=torch.tensor([side]), text_labels=[self._prompts])[0]
        boxes = res["boxes"].float().cpu()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        scores, labels = res["scores"].float().cpu(), res["labels"].cpu()
        ok = ((boxes[:, 2] - boxes[:, 0]) >= self.min_side_px) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_side_px)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        keep = nms(boxes, scores, self.nms_iou)[: self.max_detections] if len(boxes) else []
        return [Detection(tuple(float(x) for x in boxes[i]), self.vocabulary[int(labels[i])], float(scores[i]))
                for i in keep]


class GroundedSegmenter(ModelWrapper):
    """The detector's boxes prompt SAM: one region per detection, carrying its label and detection score."""

    def __init__(self, detector: OpenVocabDetector, sam: SamSegmenter):
        self.detector, self.sam = detector, sam
        self.name = f"{detector.name}+{sam.name}"

    @property
    def version(self) -> str:
        return f"{self.detector.version}+{self.sam.version}"

    def resources(self) -> Resources:
        return self.sam.resources()

    def setup(self) -> None:
        self.detector.setup()
        self.sam.setup()

    def __call__(self, image: np.ndarray) -> list[Region]:
        dets = self.detector(image)
        if not dets:
            return []
        regions = self.sam.prompt(image, boxes=np.array([d.box for d in dets], np.float32))
        return [Region(r.mask, r.score, label=d.label, label_score=d.score) for r, d in zip(regions, dets)]


def make_detector(kind: str, models_dir: str | Path, vocabulary: Sequence[str], threshold: float,
                  model: str = DETECTOR_MODEL) -> OpenVocabDetector | None:
    """'owlv2' (absent files: a clear error at setup), 'auto' (when its folder is there), or 'off'."""
    if kind == "off":
        return None
    det = OpenVocabDetector(detector_dir(models_dir, model), vocabulary, threshold)
    if kind == "owlv2" or (kind == "auto" and det.available()):
        return det
    if kind == "auto":
        return None
    raise ValueError(f"unknown object detector {kind!r}; use auto, owlv2 or off")
