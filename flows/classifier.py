"""Train the second-level pair classifier from labelled pairs on the run's stored embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mining.models.embedders import make_embedder
from mining.pairs.classifier import save_pair_classifier, train_pair_classifier
from schemas.config import RunConfig
from schemas.layout import RunLayout
from stages.corpus.embed import load_embeddings


def train_from_labels(cfg: RunConfig, labels_path: Path, out_path: Path, epochs: int = 200) -> dict:
    table = pq.read_table(labels_path)
    need = {"source_id", "target_id", "label"}
    if not need <= set(table.column_names):
        raise ValueError(f"{labels_path} needs columns {sorted(need)}, has {table.column_names}")
    embedder = make_embedder(cfg.mining.embedder, cfg.models_dir)
    ids, x, marker = load_embeddings(RunLayout(cfg.root).embeddings(embedder.name))
    row = {i: k for k, i in enumerate(ids)}
    src, tgt = table.column("source_id").to_pylist(), table.column("target_id").to_pylist()
    missing = [i for i in src + tgt if i not in row]
    if missing:
        raise KeyError(f"{len(missing)} labelled ids have no embedding in {marker['embedder']}, e.g. {missing[0]}")
    a = x[[row[i] for i in src]]
    b = x[[row[i] for i in tgt]]
    y = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    head, rep = train_pair_classifier(a, b, y, epochs=epochs, seed=cfg.mining.seed)
    save_pair_classifier(head, out_path, marker["embedder"])
    return {"pairs": len(y), "positives": int(y.sum()), "embedder": marker["embedder"], "loss": rep.final_loss,
            "accuracy": rep.train_accuracy}
