"""Train a task's second-level pair classifier from labelled pairs on the run's stored embeddings; score
pairs with it (the labelling page shows the least certain first)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mining.models.embedders import make_embedder
from mining.pairs.classifier import (PairClassifier, classifier_path, evaluate, heldout_split, save_pair_classifier,
                                     train_pair_classifier)
from schemas.config import RunConfig
from schemas.layout import RunLayout
from stages.corpus.embed import load_embeddings

HELDOUT = 0.25  # of each class, measured on and never trained on


def _rows(table: pa.Table, task: str, where: str) -> tuple[list[str], list[str], np.ndarray]:
    """Labelled pairs: verdicts (the labelling page's file, latest per pair, skips left out) or 0/1 labels."""
    from flows.labels import training_rows

    if "verdict" in table.column_names:
        if "task" in table.column_names:
            table = table.filter(pc.equal(table.column("task"), task))
        return training_rows(table)
    need = {"source_id", "target_id", "label"}
    if not need <= set(table.column_names):
        raise ValueError(f"{where} needs columns {sorted(need)} (or the labelling page's verdicts), "
                         f"has {table.column_names}")
    return (table.column("source_id").to_pylist(), table.column("target_id").to_pylist(),
            np.asarray(table.column("label").to_pylist(), dtype=np.int64))


def _vectors(cfg: RunConfig, src: list[str], tgt: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    embedder = make_embedder(cfg.mining.embedder, cfg.models_dir)
    ids, x, marker = load_embeddings(RunLayout(cfg.root).embeddings(embedder.name))
    row = {i: k for k, i in enumerate(ids)}
    missing = [i for i in src + tgt if i not in row]
    if missing:
        raise KeyError(f"{len(missing)} labelled ids have no embedding in {marker['embedder']}, e.g. {missing[0]}")
    return x[[row[i] for i in src]], x[[row[i] for i in tgt]], marker["embedder"]


def train_from_labels(cfg: RunConfig, labels_path: Path | None, out_path: Path | None = None,
                      task: str = "general_editing", epochs: int = 200, heldout: float = HELDOUT) -> dict:
    """Train on the labels but a stratified held-out part, measure on that part, save the head with the
    figures in its metadata (default: models_dir/pair_classifier/<task>.safetensors, where mining finds it).
    `labels_path` None: the labelling page's verdicts under the root."""
    where = str(labels_path) if labels_path is not None else RunLayout(cfg.root).pair_labels(task)
    if labels_path is None:
        from flows.labels import read_labels

        table = read_labels(cfg.root, task)
        if not table.num_rows:
            raise FileNotFoundError(f"no {task} labels under {where}: label pairs with `aceforge label`")
    else:
        table = pq.read_table(labels_path)
    src, tgt, y = _rows(table, task, where)
    if set(np.unique(y).tolist()) - {0, 1}:
        raise ValueError(f"{where}: labels must be 0 or 1")
    a, b, embedder = _vectors(cfg, src, tgt)
    train, held = heldout_split(y, heldout, cfg.mining.seed)
    head, rep = train_pair_classifier(a[train], b[train], y[train], epochs=epochs, seed=cfg.mining.seed)
    fig = evaluate(head, a[held], b[held], y[held])
    out_path = out_path or classifier_path(cfg.models_dir, task)
    meta = {"task": task, "train_pairs": str(len(train)), "heldout_pairs": str(len(held)),
            "positives": str(int(y.sum())), "heldout_accuracy": f"{fig['accuracy']:.4f}",
            "heldout_roc_auc": f"{fig['roc_auc']:.4f}", "train_accuracy": f"{rep.train_accuracy:.4f}",
            "epochs": str(epochs), "labels": where,
            "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    save_pair_classifier(head, out_path, embedder, meta)
    return {"pairs": len(y), "positives": int(y.sum()), "embedder": embedder, "loss": rep.final_loss,
            "accuracy": rep.train_accuracy, "train_pairs": len(train), "heldout_pairs": len(held),
            "heldout_accuracy": fig["accuracy"], "heldout_roc_auc": fig["roc_auc"], "task": task, "out": str(out_path)}


def score_pairs(cfg: RunConfig, task: str, src: list[str], tgt: list[str]) -> np.ndarray | None:
    """The task's trained classifier's scores of these pairs; None while none is trained."""
    path = classifier_path(cfg.models_dir, task)
    if not path.is_file() or not src:
        return None
    clf = PairClassifier(path)
    clf.setup()
    a, b, embedder = _vectors(cfg, src, tgt)
    if clf.embedder != embedder:
        raise ValueError(f"{path} was trained on {clf.embedder} features, the root holds {embedder}")
    return clf.scores(a, b)
