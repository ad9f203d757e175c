"""Evaluation images in training data: exact copies (same pixels) and near-duplicates (embedding similarity).

An evaluation image is indexed by the hash of its decoded pixels and by two embeddings, of itself and of its
mirror image (so a flipped copy matches as well as a rescaled or re-encoded one). A training image is then
`exact` when its pixel hash is an evaluation image's, `duplicate` when its best similarity reaches the
embedder's duplicate level (the band's upper end), `near` when it lies in the band (the same photo edited),
and clean below. Similarities are on the embedder's own scale (its `band`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

LEVELS = ("exact", "duplicate", "near")


def pixel_hash(im: Image.Image) -> str:
    """sha256 of the RGB pixels and size: the same picture stored as PNG or re-saved losslessly hashes alike."""
    rgb = im if im.mode == "RGB" else im.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}".encode() + rgb.tobytes()).hexdigest()


@dataclass
class EvalIndex:
    names: list[str]
    hashes: dict[str, int]  # pixel hash -> evaluation image
    vectors: np.ndarray  # (2 n, dim): each image, then its mirror
    band: tuple[float, float]

    @classmethod
    def build(cls, names: list[str], images: Sequence[Image.Image], embed, band: tuple[float, float]) -> "EvalIndex":
        rgb = [im.convert("RGB") for im in images]
        vecs = embed(rgb + [ImageOps.mirror(im) for im in rgb])
        return cls(list(names), {pixel_hash(im): i for i, im in enumerate(rgb)}, np.asarray(vecs, np.float32), band)

    def match(self, images: Sequence[Image.Image], embed) -> list[tuple[str | None, int, float]]:
        """Per image: (level or None, the evaluation image it matches best, similarity)."""
        if not images:
            return []
        images = [im.convert("RGB") for im in images]  # once: the embedder and the pixel hash read the same RGB
        sims = np.asarray(embed(images), np.float32) @ self.vectors.T
        n = len(self.names)
        best = np.maximum(sims[:, :n], sims[:, n:]) if n else sims
        out = []
        for im, row in zip(images, best):
            exact = self.hashes.get(pixel_hash(im))
            j = int(row.argmax()) if n else -1
            s = float(row[j]) if n else 0.0
            if exact is not None:
                out.append(("exact", exact, 1.0))
            elif n and s >= self.band[1]:
                out.append(("duplicate", j, s))
            elif n and s >= self.band[0]:
                out.append(("near", j, s))
            else:
                out.append((None, j, s))
        return out
