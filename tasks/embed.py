"""Embed the catalog: <root>/embeddings/<embedder>/part-NNNNN.parquet (float16 vectors + ids, the
embedder's name and version in the schema metadata), then a completion marker.

Partitions are written atomically and skipped on a re-run; an image that no longer decodes is skipped
and counted by reason in the marker.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

import numpy as np

from mining.decode import RejectedImage, decode_image
from mining.embedders import ImageEmbedder
from schemas.arrow import embedding_from_table, embedding_to_table
from schemas.config import IngestConfig
from schemas.records import EmbeddingPartition, ImageRecord
from tasks import storage
from tasks.sources import read_uri


def embeddings_uri(root: str, embedder_name: str) -> str:
    return storage.join(root, "embeddings", re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_name))


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def embed_catalog(catalog: list[ImageRecord], root: str, embedder: ImageEmbedder, *, partition_size: int = 4096,
                  ingest_cfg: IngestConfig | None = None, progress: Callable[[int], None] | None = None) -> str:
    ingest_cfg = ingest_cfg or IngestConfig()
    out = embeddings_uri(root, embedder.name)
    if storage.read_marker(out) is not None:
        return out
    fs, path = storage.fs_path(out)
    fs.makedirs(path, exist_ok=True)
    storage.remove_stale_tmp(out)
    skipped: Counter[str] = Counter()
    embedder.setup()
    n_parts = 0
    for p, start in enumerate(range(0, len(catalog), partition_size)):
        n_parts += 1
        part_uri = storage.join(out, _part_name(p))
        chunk = catalog[start : start + partition_size]
        if fs.exists(storage.fs_path(part_uri)[1]):
            if progress:
                progress(len(chunk))
            continue
        ids, images = [], []
        for rec in chunk:
            try:
                dec = decode_image(read_uri(rec.uri), max_pixels=ingest_cfg.max_pixels, min_side=1)
            except RejectedImage as e:
                skipped[e.reason.value] += 1
                continue
            except OSError:
                skipped["read_error"] += 1
                continue
            ids.append(rec.id)
            images.append(dec.image)
        vecs = embedder(images) if images else np.zeros((0, embedder.dim), np.float32)
        part = EmbeddingPartition(ids=ids, vectors=vecs.astype(np.float16), embedder=embedder.name,
                                  embedder_version=embedder.version)
        storage.atomic_write_parquet(part_uri, embedding_to_table(part))
        if progress:
            progress(len(chunk))
    storage.write_marker(out, {"embedder": embedder.name, "version": embedder.version, "dim": embedder.dim,
                               "partitions": n_parts, "images": len(catalog), "skipped": dict(skipped),
                               "band": list(embedder.band)})
    return out


def load_embeddings(uri: str) -> tuple[list[str], np.ndarray, dict]:
    """(ids, float32 unit vectors, marker) of a complete embedding directory, in partition order."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete embeddings under {uri}")
    ids: list[str] = []
    vecs = []
    for p in range(marker["partitions"]):
        part = embedding_from_table(storage.read_parquet(storage.join(uri, _part_name(p))))
        if part.embedder != marker["embedder"]:
            raise ValueError(f"{uri}/{_part_name(p)} was made by {part.embedder}, not {marker['embedder']}")
        ids += part.ids
        vecs.append(part.vectors.astype(np.float32))
    x = np.concatenate(vecs) if vecs else np.zeros((0, marker["dim"]), np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # re-normalise after float16 storage
    return ids, x, marker
