"""Task presets for clustering-based pairs: ACE Table 4, style editing and series generation.

The first-level band (lo, hi) is on the cosine similarity of the preset's features: image features
(ACE: 0.85-0.98 on SigLIP), face features (misaligned facial editing: the 0.8-0.9 band of Table 4) or
style features (0.65). The second-level check is a binary pair classifier's score or none. `None` as a
bound means unbounded on that side. Object and text editing need their task's classifier: without one a
clustering pair is no more an object or a text edit than any other, so those presets refuse to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NO_CLASSIFIER = "pair-classifier:none"
CLASSIFIER_DIR = "pair_classifier"  # under models_dir: one head per task, <task>.safetensors


def classifier_path(models_dir: str | Path, task: str) -> Path:
    """Where `aceforge train-pair-classifier --task T` puts task T's head and mining looks for it (no torch here:
    the flow process plans with it)."""
    return Path(models_dir) / CLASSIFIER_DIR / f"{task}.safetensors"


@dataclass(frozen=True)
class TaskPreset:
    name: str
    task: str  # a task of schemas.taxonomy
    check: str  # "classifier" or "none"
    check_lo: float | None
    check_hi: float | None
    band: tuple[float, float] | None = None  # None: the embedder's own calibrated band
    keep: str = "pairs"  # "pairs", "largest_set" (style) or "groups" (series / reference)
    features: str = "image"  # "image", "face" or "style": what the band is measured on
    requires_classifier: bool = False  # refuse to mine without a trained classifier for the task

    def passes(self, score: float) -> bool:
        return (self.check_lo is None or score >= self.check_lo) and (self.check_hi is None or score <= self.check_hi)


PRESETS: dict[str, TaskPreset] = {p.name: p for p in [
    TaskPreset("general_editing", "general_editing", "classifier", 0.9, 1.0),
    TaskPreset("facial_misaligned", "facial_editing_misaligned", "none", None, None, band=(0.8, 0.9),
               features="face"),
    TaskPreset("object_editing", "object_editing", "classifier", 0.5, None, requires_classifier=True),
    TaskPreset("text_editing", "text_editing", "classifier", None, 0.99, requires_classifier=True),
    TaskPreset("reference_generation", "reference_generation", "classifier", 0.8, 0.95, keep="groups"),
    TaskPreset("style_editing", "style_editing", "none", None, None, band=(0.65, 1.0), keep="largest_set",
               features="style"),
    TaskPreset("series_generation", "series_generation", "none", None, None, keep="groups"),
]}


def preset(name: str) -> TaskPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def largest_set(sets: list[np.ndarray]) -> list[np.ndarray]:
    """Style editing keeps only the largest set (ties: the one with the smallest first row)."""
    if not sets:
        return []
    return [max(sets, key=lambda s: (len(s), -int(s[0])))]


def check_presets(names: list[str], available_features: tuple[str, ...] = ("image",)) -> None:
    """Before any work: every preset exists and is defined on features the mining flow computes."""
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} in mining.presets; known: {', '.join(sorted(PRESETS))}")
        if PRESETS[name].features not in available_features:
            raise ValueError(f"preset {name!r} is defined on {PRESETS[name].features} features, which the mining "
                             f"flow does not compute yet (it computes {', '.join(available_features)} features)")
