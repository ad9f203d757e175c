"""Style features (ACE B.4.2: style editing groups images by a style descriptor, union-find at a threshold).

A style feature is the Gram statistics of a conv net's activations at a few layers: per layer the channel
covariance of the activations over all positions, its upper triangle signed-square-rooted and L2-normed,
the layers concatenated, beside palette and texture statistics (`image_stats`: gradient histogram, colour
entropy and count, flat share, saturation), each block unit-normed, then the whole L2-normed again.
Two extractors give it:

- `RandConvStyle` ("style-gram-randconv", the offline default): a small conv net whose filters come from a
  fixed seed. Gram statistics of random filters are a known texture / style descriptor; no weights needed.
- `VggStyle` ("style-gram-vgg16"): torchvision's VGG16 `features`, loaded from
  `<models_dir>/style/vgg16.safetensors` (sha256 pinned; another file is refused unless its digest is given).

CSD (the descriptor ACE's style threshold was set on) needs weights no package ships: the extractor used
is named in each sample's lineage and the threshold is `synthesis.style.threshold`, set on these features.
Measured on photos and a poster-style family (tests/mining/style/test_features.py): random-conv Gram statistics
alone follow content (a family chains to every photo at any threshold that holds it together); with the
statistics block at `gram_weight` 0.5 the family forms one set at 0.8 with no photo in it.

`style_reference_ok` is the supervision check of `style_transfer_reference` (mining/supervision.py): each
style reference's feature cosine to the target at least `supervision.style_min_cosine`, that cosine above the
edit image's own by `supervision.style_min_margin`, and, when the sample names its bank style, the reference
a fixed point of that style (mining/style/fixed.py), else `style_mismatch`.
It always measures on the offline random-conv features of seed 0 (built once per process), whatever extractor
made the set, so a packed set is audited on one scale. `style_editing` has no reference and its target is
the named bank stylisation of its input itself: no style check applies beyond the generic `no_change`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mining.models.base import ModelWrapper
from schemas.resources import Resources

if TYPE_CHECKING:  # torch is imported where a feature is computed, not by the flow process that plans
    import torch
    from torch import nn

    from mining.supervision import View
    from schemas.config import SupervisionConfig

VGG_SHA256 = None  # the digest of the converted torchvision VGG16 weights, pinned when they are fetched
VGG_LAYERS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3 in torchvision's vgg16().features
_MEAN = (0.485, 0.456, 0.406)  # ImageNet's channel means and deviations (VGG's inputs)
_STD = (0.229, 0.224, 0.225)


def vgg_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / "style" / "vgg16.safetensors"


def gram_vector(act: torch.Tensor) -> torch.Tensor:
    """(c, h, w) activations -> the upper triangle of their channel covariance, signed sqrt, unit norm."""
    import torch

    c = act.shape[0]
    f = act.reshape(c, -1)
    f = f - f.mean(dim=1, keepdim=True)
    g = f @ f.T / f.shape[1]
    iu = torch.triu_indices(c, c)
    v = g[iu[0], iu[1]]
    v = torch.sign(v) * v.abs().sqrt()
    return v / (v.norm() + 1e-8)


def image_stats(image: np.ndarray) -> np.ndarray:
    """Palette and texture statistics a style shares across contents: the gradient-magnitude histogram
    (sqrt), colour entropy on a 512-bin grid, how few exact colours there are, the share of flat pixels,
    saturation mean and spread."""
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    hist, _ = np.histogram(np.log1p(mag), bins=8, range=(0, 7))
    q = (image // 32).reshape(-1, 3).astype(np.int32)
    p = np.bincount(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2], minlength=512) / len(q)
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum() / np.log(512)
    exact = np.unique(image.reshape(-1, 3), axis=0).shape[0]
    flat = (np.abs(cv2.Laplacian(g, cv2.CV_32F)) < 1).mean()
    sat = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    return np.concatenate([np.sqrt(hist / max(1, hist.sum())),
                           [entropy, 4 / np.log2(2 + exact), flat, sat.mean(), 2 * sat.std()]]).astype(np.float32)


class _GramExtractor(ModelWrapper):
    """Shared: resize, run the net, Gram vectors at the chosen layers + image statistics, normed."""

    name: str
    version: str
    side = 128  # images are resized so the shorter side is this (style is a local statistic)
    gram_weight = 0.5  # the Gram block (unit norm) against the statistics block (unit norm)
    stats_centre = 0.3  # subtracted from the statistics (all in [0, 1]) so their cosine is not always high
    RESOURCES = Resources(cpus=1.0)

    def __init__(self) -> None:
        self.net: nn.Module | None = None
        self.layers: tuple[int, ...] = ()

    def _acts(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.net):  # type: ignore[arg-type]
            x = layer(x)
            if i in self.layers:
                out.append(x[0])
            if i >= max(self.layers):
                break
        return out

    def _raw(self, image: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"style features need an RGB (h, w, 3) image, got shape {image.shape}")
        im = Image.fromarray(image)
        f = self.side / min(im.size)
        w, h = max(8, round(im.width * f)), max(8, round(im.height * f))
        if max(w, h) > 4 * self.side:  # a strip: the centre of its long side (bounded work for any aspect)
            cut = 4 * self.side / f
            if im.width >= im.height:
                x0 = (im.width - cut) / 2
                im = im.crop((round(x0), 0, round(x0 + cut), im.height))
            else:
                y0 = (im.height - cut) / 2
                im = im.crop((0, round(y0), im.width, round(y0 + cut)))
            w, h = min(w, 4 * self.side), min(h, 4 * self.side)
        im = im.resize((w, h), Image.Resampling.BILINEAR)
        small = np.asarray(im)
        x = torch.from_numpy(small.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            mean, std = torch.tensor(_MEAN).view(1, 3, 1, 1), torch.tensor(_STD).view(1, 3, 1, 1)
            grams = [gram_vector(a) for a in self._acts((x - mean) / std)]
        gram = torch.cat(grams).numpy()
        stats = image_stats(small) - self.stats_centre
        return np.concatenate([self.gram_weight * gram / (np.linalg.norm(gram) + 1e-8),
                               stats / (np.linalg.norm(stats) + 1e-8)]).astype(np.float32)

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """(n, d) float32 unit vectors, one per RGB uint8 image."""
        import torch

        if self.net is None:
            self.setup()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # convs this small run ~10x slower split over threads on a busy node
        try:
            x = np.stack([self._raw(im) for im in images]) if images else np.zeros((0, 1), np.float32)
        finally:
            torch.set_num_threads(threads)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)

    def setup(self) -> None:
        raise NotImplementedError


class RandConvStyle(_GramExtractor):
    """Gram statistics of a fixed-seed random conv net (offline: no weights)."""

    name = "style-gram-randconv"

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (16, 32, 48)):
        super().__init__()
        self.seed, self.widths = seed, widths
        self.version = f"2-s{seed}-w{'x'.join(map(str, widths))}"

    def setup(self) -> None:
        import torch
        from torch import nn

        if self.net is not None:
            return
        g = torch.Generator().manual_seed(self.seed)
        layers: list[nn.Module] = []
        cin = 3
        for w in self.widths:
            conv = nn.Conv2d(cin, w, 3, padding=1, bias=False)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (cin * 9) ** 0.5)
            layers += [conv, nn.ReLU(), nn.AvgPool2d(2)]
            cin = w
        self.net = nn.Sequential(*layers).eval()
        self.layers = tuple(3 * i + 1 for i in range(len(self.widths)))


class VggStyle(_GramExtractor):
    """Gram statistics of torchvision VGG16 `features` from `<models_dir>/style/vgg16.safetensors`."""

    name = "style-gram-vgg16"
    side = 224

    def __init__(self, path: str | Path, sha256: str | None = VGG_SHA256, layers: tuple[int, ...] = VGG_LAYERS):
        super().__init__()
        self.path, self.sha256, self.layers = Path(path), sha256, layers
        self.version = f"2-{(sha256 or 'unpinned')[:12]}"

    def setup(self) -> None:
        if self.net is not None:
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"VGG16 style weights not found: put torchvision's vgg16 `features` weights "
                                    f"as safetensors at {self.path}")
        if self.sha256 is None:
            raise ValueError(f"{self.path}: no pinned sha256 for the VGG16 style weights; pass the file's digest")
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise ValueError(f"{self.path}: sha256 {digest} does not match the pinned {self.sha256}")
        from safetensors.torch import load_file

        net = vgg16_features()
        state = load_file(str(self.path))
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        net.load_state_dict(state, strict=True)
        self.net = net.eval()


def vgg16_features() -> nn.Module:
    """torchvision's VGG16 `features` (configuration D, no batch norm), built without the classifier."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"], batch_norm=False)


def save_vgg_features(net: nn.Module, path: str | Path) -> str:
    """Write a VGG16 `features` module as safetensors; returns the file's sha256 (to pin)."""
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_style_extractor(kind: str, models_dir: str | Path, seed: int = 0, sha256: str | None = VGG_SHA256):
    """'randconv', 'vgg16', or 'auto' (VGG16 when its file is in <models_dir>/style/ and a digest is pinned)."""
    path = vgg_path(models_dir)
    if kind == "vgg16" or (kind == "auto" and path.is_file() and sha256 is not None):
        return VggStyle(path, sha256)
    if kind in ("auto", "randconv"):
        return RandConvStyle(seed)
    raise ValueError(f"unknown style extractor {kind!r}; use auto, randconv or vgg16")


_CHECK_EXTRACTOR: RandConvStyle | None = None


def check_extractor() -> RandConvStyle:
    """The supervision check's extractor: offline random-conv features of seed 0, built once per process."""
    global _CHECK_EXTRACTOR
    if _CHECK_EXTRACTOR is None:
        ex = make_style_extractor("randconv", "", seed=0)
        ex.setup()
        _CHECK_EXTRACTOR = ex
    return _CHECK_EXTRACTOR


def style_reference_ok(v: View, cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """style_transfer_reference: every reference (the inputs after the edit) is in the target's style: feature
    cosine to the target at least `cfg.style_min_cosine` and above the edit image's by `cfg.style_min_margin`
    (a photo reference for a stylised photo is near it in features, but no nearer than the photo itself), and a
    fixed point of the bank style the sample names in `labels["style"]`; else style_mismatch."""
    from mining.style.fixed import in_style
    from mining.style.stylize import STYLES

    refs = v.inputs[1:]
    if not refs:
        return "style_mismatch", {"reference_style_cos": -1.0}
    ex = check_extractor()
    x = ex([v.target, v.inputs[0], *refs])
    least = float((x[2:] @ x[0]).min())
    edit = float(x[1] @ x[0])
    scores = {"reference_style_cos": round(least, 4), "edit_style_cos": round(edit, 4),
              "reference_style_margin": round(least - edit, 4)}
    fail = least < cfg.style_min_cosine or least - edit < cfg.style_min_margin
    style = v.labels.get("style")
    if style in STYLES:
        ok, worst = in_style(refs, style, ex, cfg.style_fixed_max_change, cfg.style_fixed_min_cosine)
        scores.update({f"reference_{k}": round(w, 4) for k, w in worst.items()})
        fail = fail or not ok.all()
    return ("style_mismatch" if fail else None), scores
