"""Embed the catalog: <root>/embeddings/<embedder>/part-NNNNN.parquet (float16 vectors + ids, the
embedder's name and version in the schema metadata), then a completion marker.

Partitions are written atomically and skipped on a re-run; an image that no longer decodes is skipped
and counted by reason in the marker.
"""

from __future__ import annotations

import json
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


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def decode_records(records: list[ImageRecord], max_pixels: int) -> tuple[list[str], list, Counter]:
    """(ids, RGB images, skipped by reason) of the records that still decode."""
    ids, images, skipped = [], [], Counter()
    for rec in records:
        try:
            dec = decode_image(read_uri(rec.uri), max_pixels=max_pixels, min_side=1)
        except RejectedImage as e:
            skipped[e.reason.value] += 1
            continue
        except OSError:
            skipped["read_error"] += 1
            continue
        ids.append(rec.id)
        images.append(dec.image)
    return ids, images, skipped


def write_partition(part_uri: str, ids: list[str], vecs: np.ndarray, embedder: str, version: str,
                    skipped: dict[str, int], records: int) -> None:
    """Write one partition; `records` catalog rows went in, and each is embedded or skipped with a reason."""
    if len(ids) + sum(skipped.values()) != records or len(vecs) != len(ids):
        raise RuntimeError(f"{part_uri}: {records} catalog rows in, {len(ids)} embedded + "
                           f"{sum(skipped.values())} skipped {dict(skipped)}: counts do not reconcile")
    part = EmbeddingPartition(ids=ids, vectors=vecs.astype(np.float16), embedder=embedder, embedder_version=version)
    table = embedding_to_table(part)
    meta = {**(table.schema.metadata or {}), b"skipped": json.dumps(skipped).encode(),
            b"records": str(records).encode()}
    storage.atomic_write_parquet(part_uri, table.replace_schema_metadata(meta))


def embed_partition(records: list[ImageRecord], part_uri: str, embedder: ImageEmbedder,
                    ingest_cfg: IngestConfig) -> int:
    """One unit of work: decode, embed, write the partition (skipped when it already exists)."""
    if storage.exists(part_uri):
        return 0
    embedder.setup()
    ids, images, skipped = decode_records(records, ingest_cfg.max_pixels)
    vecs = embedder(images) if images else np.zeros((0, embedder.dim), np.float32)
    write_partition(part_uri, ids, vecs, embedder.name, embedder.version, dict(skipped), len(records))
    return len(ids)


def partition_plan(catalog: list[ImageRecord], partition_size: int) -> list[list[ImageRecord]]:
    return [catalog[i : i + partition_size] for i in range(0, len(catalog), partition_size)]


def finalize_embeddings(out: str, n_parts: int, images: int, band: tuple[float, float]) -> str:
    """The marker, once every partition exists and embedded + skipped-with-reason = catalog rows."""
    skipped: Counter[str] = Counter()
    first = None
    embedded = 0
    for p in range(n_parts):
        uri = storage.join(out, part_name(p))
        if not storage.exists(uri):
            raise RuntimeError(f"embedding partition {uri} is missing: run its unit first")
        table = storage.read_parquet(uri)
        meta = table.schema.metadata or {}
        skipped.update(json.loads(meta.get(b"skipped", b"{}")))
        embedded += table.num_rows
        first = first or (meta[b"embedder"].decode(), meta[b"embedder_version"].decode(),
                          table.schema.field("vector").type.list_size)
    name, version, dim = first if first else ("none", "none", 0)
    if embedded + sum(skipped.values()) != images:
        raise RuntimeError(f"{out}: the catalog has {images} images but {n_parts} partitions hold {embedded} "
                           f"embedded + {sum(skipped.values())} skipped: remove the partitions and embed again")
    storage.write_marker(out, {"embedder": name, "version": version, "dim": dim, "partitions": n_parts,
                               "images": images, "embedded": embedded, "skipped": dict(skipped), "band": list(band)})
    return out


def embed_catalog(catalog: list[ImageRecord], root: str, embedder: ImageEmbedder, *, partition_size: int = 4096,
                  ingest_cfg: IngestConfig | None = None, progress: Callable[[int], None] | None = None) -> str:
    """Every partition, then the marker, in this process."""
    ingest_cfg = ingest_cfg or IngestConfig()
    out = embeddings_uri(root, embedder.name)
    if storage.read_marker(out) is not None:
        return out
    fs, path = storage.fs_path(out)
    fs.makedirs(path, exist_ok=True)
    storage.remove_stale_tmp(out)
    parts = partition_plan(catalog, partition_size)
    for p, chunk in enumerate(parts):
        embed_partition(chunk, storage.join(out, part_name(p)), embedder, ingest_cfg)
        if progress:
            progress(len(chunk))
    return finalize_embeddings(out, len(parts), len(catalog), embedder.band)


def load_embeddings(uri: str) -> tuple[list[str], np.ndarray, dict]:
    """(ids, float32 unit vectors, marker) of a complete embedding directory, in partition order."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete embeddings under {uri}")
    ids: list[str] = []
    vecs = []
    for p in range(marker["partitions"]):
        part = embedding_from_table(storage.read_parquet(storage.join(uri, part_name(p))))
        if part.embedder != marker["embedder"]:
            raise ValueError(f"{uri}/{part_name(p)} was made by {part.embedder}, not {marker['embedder']}")
        ids += part.ids
        vecs.append(part.vectors.astype(np.float32))
    x = np.concatenate(vecs) if vecs else np.zeros((0, marker["dim"]), np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # re-normalise after float16 storage
    return ids, x, marker
