"""Second-level pair check: a small head on frozen image features of both images.

Input [a, b, a*b, |a-b|] (symmetric in content, not in order) -> MLP -> P(valid editing pair).
Trained per task from labelled pairs (a stratified held-out part measures it: accuracy and ROC AUC), saved
as safetensors with its metadata, applied with a preset's bounds. Without a trained classifier the check
passes pairs through and says that no classifier ran; a preset that needs one refuses to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mining.models.embedders import MissingModelError
from mining.models.base import ModelWrapper
from mining.pairs.presets import CLASSIFIER_DIR, NO_CLASSIFIER, TaskPreset, classifier_path  # noqa: F401 (re-exported)



class PairHead(nn.Module):
    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.net = nn.Sequential(nn.Linear(4 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b, a * b, (a - b).abs()], dim=-1)  # (n, 4d)
        return self.net(x).squeeze(-1)  # logits (n,)


@dataclass
class TrainReport:
    epochs: int
    final_loss: float
    train_accuracy: float


def train_pair_classifier(a: np.ndarray, b: np.ndarray, labels: np.ndarray, *, hidden: int = 256, epochs: int = 200,
                          lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0) -> tuple[PairHead, TrainReport]:
    if not (len(a) == len(b) == len(labels)) or len(a) == 0:
        raise ValueError("a, b and labels must be non-empty and of equal length")
    if set(np.unique(labels).tolist()) - {0, 1}:
        raise ValueError("labels must be 0 or 1")
    torch.manual_seed(seed)
    head = PairHead(a.shape[1], hidden)
    ta, tb = torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.float32))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    loss = torch.tensor(0.0)
    for _ in range(epochs):  # full batch: labelled pair sets are small
        opt.zero_grad()
        # both orders, so the score does not depend on which image is the source
        logits = torch.cat([head(ta, tb), head(tb, ta)])
        loss = loss_fn(logits, torch.cat([y, y]))
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = ((head(ta, tb) > 0).float() == y).float().mean().item()
    return head.eval(), TrainReport(epochs, float(loss.item()), acc)


def heldout_split(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): `frac` of each class held out, at least one of each; a class with
    fewer than two rows cannot be both trained on and measured."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if len(rows) < 2:
            raise ValueError(f"{len(rows)} pairs labelled {'valid' if c else 'invalid'}: at least 2 of each are "
                             f"needed (one to train on, one to measure on)")
        n = min(len(rows) - 1, max(1, int(round(frac * len(rows)))))
        held.append(rows[:n])
        train.append(rows[n:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(a valid pair scores above an invalid one), ties counting half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        raise ValueError("ROC AUC needs both classes")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def evaluate(head: PairHead, a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy at 0.5 and ROC AUC of the head's order-symmetric score on labelled pairs."""
    with torch.no_grad():
        ta, tb = torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))
        s = torch.sigmoid((head(ta, tb) + head(tb, ta)) / 2).numpy()
    return {"accuracy": float(((s >= 0.5).astype(int) == labels).mean()), "roc_auc": roc_auc(labels, s)}


def save_pair_classifier(head: PairHead, path: str | Path, embedder: str, extra: dict[str, str] | None = None) -> None:
    """The head and its metadata (`extra`: the task, the held-out figures, what it was trained on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**(extra or {}), "dim": str(head.dim), "hidden": str(head.hidden), "embedder": embedder,
            "format": "aceforge-pair-head-1"}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)


class PairClassifier(ModelWrapper):
    """A trained head (setup() loads it) or, when `path` is None, the pass-through check."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.head: PairHead | None = None
        self.embedder: str | None = None
        self.metadata: dict[str, str] = {}

    @property
    def name(self) -> str:
        return NO_CLASSIFIER if self.path is None else f"pair-classifier:{self.path.stem}"

    def setup(self) -> None:
        if self.path is None:
            return
        if not self.path.is_file():
            raise MissingModelError(f"pair classifier not found: {self.path} (train one with "
                                    f"`aceforge train-pair-classifier`)")
        from safetensors import safe_open

        with safe_open(str(self.path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "aceforge-pair-head-1":
            raise ValueError(f"{self.path} is not an aceforge pair classifier (metadata {json.dumps(meta)})")
        head = PairHead(int(meta["dim"]), int(meta["hidden"]))
        head.load_state_dict(load_file(str(self.path)))
        self.head = head.eval()
        self.embedder = meta["embedder"]
        self.metadata = meta

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        """P(valid pair) for each row pair, or None when no classifier is configured (never a made-up score)."""
        if self.path is None:
            return None
        if self.head is None:
            self.setup()
        with torch.no_grad():
            ta, tb = torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))
            return torch.sigmoid((self.head(ta, tb) + self.head(tb, ta)) / 2).numpy()

    def keep(self, a: np.ndarray, b: np.ndarray, preset: TaskPreset) -> tuple[np.ndarray, np.ndarray | None]:
        """(keep mask, scores or None). Pass-through keeps everything and returns no scores."""
        s = self.scores(a, b)
        if s is None:
            return np.ones(len(a), bool), None
        return np.array([preset.passes(float(v)) for v in s], bool), s
