"""The artefact classifier slot of synthesis verification (ACE filters inpainting results with a classifier).

A small head on frozen SigLIP image features of the inpainted result -> P(artefact). It is trained from
labelled results (`train_artefact_head`), saved as safetensors with its metadata (format, the embedder it was
trained on, sizes) under the models directory, and applied after the measurable checks: a result whose
probability exceeds `synthesis.verify.max_artefact_prob` is dropped with the reason "artefact". Not configured
(the default): no classifier runs and none is named in lineage; configured but absent: a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mining.models.embedders import MissingModelError, SiglipEmbedder
from mining.models.base import ModelWrapper
from schemas.resources import Resources

FORMAT = "aceforge-artefact-head-1"


class ArtefactHead(nn.Module):
    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # logits (n,)


def train_artefact_head(features: np.ndarray, labels: np.ndarray, *, hidden: int = 128, epochs: int = 200,
                        lr: float = 1e-2, seed: int = 0) -> ArtefactHead:
    """Full-batch AdamW on (n, d) features and 0/1 labels (1 = artefact)."""
    if len(features) != len(labels) or len(np.unique(labels)) < 2:
        raise ValueError("need features and 0/1 labels of the same length, with both classes present")
    torch.manual_seed(seed)
    head = ArtefactHead(features.shape[1], hidden)
    x, y = torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels.astype(np.float32))
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(head(x), y)
        loss.backward()
        opt.step()
    return head.eval()


def save_artefact_head(head: ArtefactHead, path: str | Path, embedder: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path),
              metadata={"format": FORMAT, "dim": str(head.dim), "hidden": str(head.hidden), "embedder": embedder})


def artefact_path(models_dir: str | Path, name: str) -> Path:
    return Path(models_dir) / "artefact_classifier" / name


class ArtefactClassifier(ModelWrapper):
    """The head at `<models_dir>/artefact_classifier/<name>` on the features of the SigLIP image tower."""

    def __init__(self, models_dir: str | Path, name: str, embedder: SiglipEmbedder | None = None):
        self.path = artefact_path(models_dir, name)
        self.embedder = embedder or SiglipEmbedder(models_dir)
        self.name = f"artefact-classifier:{Path(name).stem}"
        self.version = "unloaded"
        self.head: ArtefactHead | None = None

    def resources(self) -> Resources:
        return self.embedder.resources()

    def setup(self) -> None:
        if self.head is not None:
            return
        if not self.path.is_file():
            raise MissingModelError(f"artefact classifier not found: {self.path} (synthesis.verify."
                                    f"artefact_classifier names a file under <models_dir>/artefact_classifier)")
        with safe_open(str(self.path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an aceforge artefact classifier (metadata {json.dumps(meta)})")
        self.embedder.setup()
        if meta["embedder"] != self.embedder.name or int(meta["dim"]) != self.embedder.dim:
            raise ValueError(f"{self.path} was trained on {meta['embedder']} features ({meta['dim']}-d), not "
                             f"{self.embedder.name} ({self.embedder.dim}-d)")
        head = ArtefactHead(int(meta["dim"]), int(meta["hidden"]))
        head.load_state_dict(load_file(str(self.path)))
        self.head = head.eval()
        self.version = f"{self.embedder.version}-{self.digest()[:12]}"

    def digest(self) -> str | None:
        """sha256 of the head file (None while it is absent): a retrained head is another classifier."""
        import hashlib

        if not self.path.is_file():
            return None
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(artefact) per RGB uint8 image."""
        self.setup()
        feats = self.embedder([Image.fromarray(a) for a in images])
        with torch.no_grad():
            return torch.sigmoid(self.head(torch.from_numpy(feats))).numpy()  # type: ignore[misc]
