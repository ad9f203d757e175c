"""Soft edges with HED (the Apache-2.0 re-implementation the ControlNet annotators ship: an RGB-input VGG-style
net with a side projection per stage), for the scribble and doodle maps when its weights are present.

    <models_dir>/hed/ControlNetHED.pth   a plain state dict (keys: norm, block{1..5}.convs.{i}, block{k}.projection)

The file is read only with its sha256 pinned (`synthesis.maps.hed_sha256`) and `torch.load(weights_only=True)`.
Edges: the five side outputs, each upsampled to the input size, through a sigmoid, averaged; 0-255.
Without the file the maps stay the classical stand-ins of mining/maps/cond_maps.py (named in lineage).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from schemas.resources import Resources
from mining.objects.segment import ChecksumError

HED_FILE = "ControlNetHED.pth"
def __getattr__(name: str):
    """The network (mining/maps/hed_net.py, which imports torch) on first use: a flow process that only plans
    the maps stage never imports torch."""
    if name in ("HedNet", "edges_from_sides", "STAGES"):
        from mining.maps import hed_net

        return getattr(hed_net, name)
    raise AttributeError(name)


def hed_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / "hed" / HED_FILE


class HedEdges(ModelWrapper):
    """House pattern: cheap __init__, setup() checks and loads, __call__(rgb uint8) -> uint8 (H, W) edges."""

    name = "hed-controlnet-apache2"
    RESOURCES = Resources(cpus=1.0)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, models_dir: str | Path, sha256: str | None, device: str = "auto"):
        self.path = hed_path(models_dir)
        self.sha256 = sha256
        self.device_pref = device
        self.version = (sha256 or "unpinned")[:12]
        self._net = None  # mining.maps.hed_net.HedNet once set up

    def available(self) -> bool:
        return self.path.is_file()

    def setup(self) -> None:
        if self._net is not None:
            return
        if not self.path.is_file():
            raise MissingModelError(f"HED weights not found: {self.path}")
        if not self.sha256:
            raise ChecksumError(f"{self.path} is present but synthesis.maps.hed_sha256 pins no digest: refusing to "
                                "load an unpinned file")
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        if h.hexdigest() != self.sha256:
            raise ChecksumError(f"{self.path} has sha256 {h.hexdigest()}, not the pinned {self.sha256}")
        import torch

        from mining.maps.hed_net import HedNet

        net = HedNet()
        net.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))
        self.device = torch.device("cuda" if self.device_pref == "auto" and torch.cuda.is_available()
                                   else ("cpu" if self.device_pref == "auto" else self.device_pref))
        self._net = net.eval().requires_grad_(False).to(self.device)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"HED takes an RGB uint8 (h, w, 3) image, got {image.dtype} {image.shape}")
        import torch

        from mining.maps.hed_net import edges_from_sides

        self.setup()
        h, w = image.shape[:2]
        x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None].to(self.device)
        with torch.inference_mode():
            e = edges_from_sides(self._net(x), h, w)[0]  # type: ignore[misc]
        return (e.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
