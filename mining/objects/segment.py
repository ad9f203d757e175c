"""Class-agnostic segmentation for object synthesis: SAM (segment-anything) or an offline region proposer.

Both take an RGB uint8 array (H, W, 3) and return `Region`s: a full-size boolean mask and a score (SAM's
predicted IoU; the proposer's colour contrast against its surroundings). Model wrappers follow the house
pattern: cheap __init__, setup() loads, __call__ per image, declared resources. SAM weights come only
from the models directory, checksum first, then `torch.load(weights_only=True)` into the architecture.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.resources import Resources


@dataclass(frozen=True)
class Region:
    mask: np.ndarray  # bool (H, W)
    score: float
    label: str | None = None  # what an open-vocabulary detector called it (mining/objects/detect.py)
    label_score: float | None = None  # that detection's score


class Segmenter(Protocol):
    name: str
    version: str

    def resources(self) -> Resources: ...
    def setup(self) -> None: ...
    def __call__(self, image: np.ndarray) -> list[Region]: ...


class ChecksumError(ValueError):
    pass


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, expected: str, what: str) -> None:
    got = file_md5(path)
    if got != expected:
        raise ChecksumError(f"{path} has md5 {got}, not the pinned {expected} of {what}: refusing to load it")


# the released checkpoints (their file names carry the first six hex digits of the md5)
SAM_CHECKPOINTS = {
    "vit_b": ("sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8"),
    "vit_l": ("sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c"),
    "vit_h": ("sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6"),
}


def sam_path(models_dir: str | Path, variant: str) -> Path:
    if variant not in SAM_CHECKPOINTS:
        raise ValueError(f"unknown SAM variant {variant!r}; use one of {', '.join(SAM_CHECKPOINTS)}")
    return Path(models_dir) / "sam" / SAM_CHECKPOINTS[variant][0]


class SamSegmenter(ModelWrapper):
    """segment-anything's `SamAutomaticMaskGenerator` over a checkpoint from the models directory, plus box
    and point prompts through `SamPredictor`. `build` makes the untrained architecture (default: the
    variant's builder from segment-anything); `md5` is the pinned checksum (default: the released file's)."""

    RESOURCES = Resources(cpus=0.5)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, checkpoint: str | Path, variant: str = "vit_b", md5: str | None = None,
                 build: Callable[[], object] | None = None, device: str = "auto", points_per_side: int = 32,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.92):
        self.path = Path(checkpoint)
        self.variant = variant
        self.md5 = md5 or SAM_CHECKPOINTS[variant][1]
        self._build = build
        self.device_pref = device
        self.options = dict(points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                            stability_score_thresh=stability_score_thresh)
        self.name = f"sam-{variant}"
        self.version = self.md5[:12]
        self._model = None

    def setup(self) -> None:
        if self._model is not None:
            return
        import torch
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

        if not self.path.is_file():
            raise MissingModelError(f"SAM weights not found: expected {self.path} (the released "
                                    f"{SAM_CHECKPOINTS.get(self.variant, ('?',))[0]})")
        check_md5(self.path, self.md5, f"SAM {self.variant}")
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        model = self._build() if self._build else sam_model_registry[self.variant](checkpoint=None)
        model.load_state_dict(state, strict=True)
        dev = self.device_pref if self.device_pref != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model.to(dev).eval()
        self._auto = SamAutomaticMaskGenerator(self._model, **self.options)

    def __call__(self, image: np.ndarray) -> list[Region]:
        import torch

        self.setup()
        with torch.inference_mode():
            found = self._auto.generate(np.ascontiguousarray(image))
        return [Region(np.asarray(m["segmentation"], bool), float(m["predicted_iou"])) for m in found]

    def prompt(self, image: np.ndarray, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
               labels: np.ndarray | None = None) -> list[Region]:
        """One region per box (x0, y0, x1, y1), or one for the point set (labels 1 = object, 0 = background):
        the best of SAM's multimask outputs."""
        import torch
        from segment_anything import SamPredictor

        self.setup()
        pred = SamPredictor(self._model)
        with torch.inference_mode():
            pred.set_image(np.ascontiguousarray(image))
            out = []
            if boxes is not None:
                for box in np.asarray(boxes, np.float32).reshape(-1, 4):
                    masks, scores, _ = pred.predict(box=box, multimask_output=True)
                    out.append(Region(masks[int(scores.argmax())].astype(bool), float(scores.max())))
            if points is not None:
                lab = np.ones(len(points), np.int64) if labels is None else np.asarray(labels)
                masks, scores, _ = pred.predict(point_coords=np.asarray(points, np.float32), point_labels=lab,
                                                multimask_output=True)
                out.append(Region(masks[int(scores.argmax())].astype(bool), float(scores.max())))
        return out


class RegionProposer(ModelWrapper):
    """The offline fallback: class-agnostic regions from graph-based segmentation (Felzenszwalb) at three
    scales of one downscaled image (fine segments, and coarser ones that merge them), holes filled,
    near-duplicates across scales merged away. Score: the region's mean Lab colour distance to a ring
    around it (an object stands out from its surroundings), scaled to [0, 1]. It knows no classes."""

    name = "regions-felzenszwalb"
    RESOURCES = Resources(cpus=0.5)
    _SCALES = (150.0, 400.0, 1000.0)

    def __init__(self, work_side: int = 256):
        import skimage

        self.work_side = work_side
        self.version = f"1+skimage{skimage.__version__}"

    def setup(self) -> None:
        return None

    def proposals(self, image: np.ndarray) -> list[Region]:
        """Regions at the working size (the longer side at most `work_side`)."""
        import cv2
        from scipy import ndimage
        from skimage.color import rgb2lab
        from skimage.segmentation import felzenszwalb

        h, w = image.shape[:2]
        f = min(1.0, self.work_side / max(h, w))
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
            if f < 1 else image
        lab = rgb2lab(small)
        sh, sw = small.shape[:2]
        min_size = max(8, sh * sw // 400)
        ring_k = np.ones((7, 7), bool)
        out: list[Region] = []
        previous: list[np.ndarray] = []  # label maps of the coarser-or-finer scales already proposed
        for scale in self._SCALES:
            seg = felzenszwalb(small, scale=scale, sigma=0.8, min_size=min_size)
            n = int(seg.max()) + 1
            dup = np.zeros(n, bool)
            size = np.bincount(seg.ravel(), minlength=n)
            for prev in previous:  # IoU of every pair of labels from the contingency table
                m = int(prev.max()) + 1
                inter = np.bincount(seg.ravel() * m + prev.ravel(), minlength=n * m).reshape(n, m)
                union = size[:, None] + np.bincount(prev.ravel(), minlength=m)[None, :] - inter
                dup |= (inter / np.maximum(union, 1)).max(1) > 0.9
            previous.append(seg)
            for label, sl in enumerate(ndimage.find_objects(seg + 1)):
                if sl is None or dup[label]:
                    continue
                y0, y1 = max(0, sl[0].start - 4), min(sh, sl[0].stop + 4)
                x0, x1 = max(0, sl[1].start - 4), min(sw, sl[1].stop + 4)
                local = ndimage.binary_fill_holes(seg[y0:y1, x0:x1] == label)
                ring = ndimage.binary_dilation(local, ring_k) & ~local
                if not ring.any():
                    continue
                patch = lab[y0:y1, x0:x1]
                contrast = float(np.linalg.norm(patch[local].mean(0) - patch[ring].mean(0)))
                m = np.zeros((sh, sw), bool)
                m[y0:y1, x0:x1] = local
                out.append(Region(m, min(1.0, contrast / 50.0)))
        return out

    def __call__(self, image: np.ndarray) -> list[Region]:
        import cv2

        h, w = image.shape[:2]
        regs = self.proposals(image)
        if not regs or regs[0].mask.shape == (h, w):
            return regs
        return [Region(cv2.resize(r.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool),
                       r.score) for r in regs]


class WithPeople(ModelWrapper):
    """A segmenter's regions plus the person mask of MediaPipe's selfie segmentation (the region proposer
    knows no classes; people are the objects a photo corpus shows most). Both names go into lineage."""

    def __init__(self, primary: Segmenter, people: Segmenter):
        self.primary, self.people = primary, people
        self.name = f"{primary.name}+{people.name}"

    @property
    def version(self) -> str:
        return f"{self.primary.version}+{self.people.version}"

    def resources(self) -> Resources:
        return self.primary.resources()

    def setup(self) -> None:
        self.primary.setup()
        self.people.setup()

    def __call__(self, image: np.ndarray) -> list[Region]:
        return [*self.people(image), *self.primary(image)]


def make_segmenter(kind: str, models_dir: str | Path, variant: str = "vit_b", **sam_options) -> Segmenter:
    """'sam', 'regions' (the offline proposer), or 'auto' (SAM when its checkpoint is present)."""
    if kind == "regions":
        return RegionProposer()
    path = sam_path(models_dir, variant)
    if kind == "sam" or (kind == "auto" and path.is_file()):
        return SamSegmenter(path, variant, **sam_options)
    if kind == "auto":
        return RegionProposer()
    raise ValueError(f"unknown segmenter {kind!r}; use sam, regions or auto")
