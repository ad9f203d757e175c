"""Embed the catalog: <root>/embeddings/<embedder>/part-NNNNN.parquet (float16 vectors + ids, the
embedder's name and version in the schema metadata), then a completion marker.

Partitions are written atomically and skipped on a re-run; an image that no longer decodes is skipped
and counted by reason in the marker.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterator

import numpy as np

from mining.image.decode import RejectedImage, decode_image
from mining.models.embedders import ImageEmbedder
from schemas.arrow import embedding_from_table, embedding_to_table
from schemas.config import IngestConfig
from schemas.records import EmbeddingPartition, ImageRecord
from store import storage
from schemas.layout import EmbeddingFiles
from store.sources import read_uri
from runtime.stage import ItemReport, Stage, StageReport


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
                    ingest_cfg: IngestConfig, batch_size: int = 32) -> int:
    """One work item: decode and embed `batch_size` images at a time (memory bounded by the batch and
    the partition's vectors), write the partition (skipped when it already exists)."""
    if storage.exists(part_uri):
        return 0
    embedder.setup()
    ids: list[str] = []
    vecs = []
    skipped: Counter[str] = Counter()
    for i in range(0, len(records), batch_size):
        b_ids, images, b_skipped = decode_records(records[i : i + batch_size], ingest_cfg.max_pixels)
        ids += b_ids
        skipped.update(b_skipped)
        if images:
            vecs.append(np.asarray(embedder(images), np.float32).astype(np.float16))
    x = np.concatenate(vecs) if vecs else np.zeros((0, embedder.dim), np.float16)
    write_partition(part_uri, ids, x, embedder.name, embedder.version, dict(skipped), len(records))
    return len(ids)


def finalize_embeddings(out: str, n_parts: int, images: int, band: tuple[float, float]) -> str:
    """The marker, once every partition exists and embedded + skipped-with-reason = catalog rows."""
    skipped: Counter[str] = Counter()
    first = None
    embedded = 0
    for p in range(n_parts):
        uri = EmbeddingFiles(out).part(p)
        if not storage.exists(uri):
            raise RuntimeError(f"embedding partition {uri} is missing: run its item first")
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


def load_embeddings(uri: str) -> tuple[list[str], np.ndarray, dict]:
    """(ids, float32 unit vectors, marker) of a complete embedding directory, in partition order."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete embeddings under {uri}")
    ids: list[str] = []
    vecs = []
    for p in range(marker["partitions"]):
        part = embedding_from_table(storage.read_parquet(EmbeddingFiles(uri).part(p)))
        if part.embedder != marker["embedder"]:
            raise ValueError(f"{EmbeddingFiles(uri).part(p)} was made by {part.embedder}, not {marker['embedder']}")
        ids += part.ids
        vecs.append(part.vectors.astype(np.float32))
    x = np.concatenate(vecs) if vecs else np.zeros((0, marker["dim"]), np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # re-normalise after float16 storage
    return ids, x, marker


def partition_ranges(generations: list[dict], partition_size: int) -> list[tuple[int, int]]:
    """Catalog row ranges of the embedding partitions: each ingest generation is cut on its own, so the
    partitions of earlier generations keep their ranges (and their files) when the catalog grows."""
    out: list[tuple[int, int]] = []
    lo = 0
    for g in generations:
        hi = g["rows"]
        out += [(a, min(a + partition_size, hi)) for a in range(lo, hi, partition_size)]
        lo = hi
    return out


def partition_sizes(uri: str) -> list[int]:
    """Rows of each partition of a complete embedding directory (from the parquet footers)."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete embeddings under {uri}")
    return [storage.parquet_file(EmbeddingFiles(uri).part(p)).metadata.num_rows
            for p in range(marker["partitions"])]


def iter_partitions(uri: str, start: int = 0) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 unit vectors) of each partition from `start` on: one partition in memory at a time."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete embeddings under {uri}")
    for p in range(start, marker["partitions"]):
        part = embedding_from_table(storage.read_parquet(EmbeddingFiles(uri).part(p)))
        if part.embedder != marker["embedder"]:
            raise ValueError(f"{EmbeddingFiles(uri).part(p)} was made by {part.embedder}, not {marker['embedder']}")
        yield part.ids, normalise_rows(part.vectors)


def normalise_rows(v: np.ndarray) -> np.ndarray:
    """float32 rows re-normalised (after float16 storage)."""
    x = np.asarray(v, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class EmbedStage(Stage):
    """<root>/embeddings/<embedder>/: one item per `mining.partition_size` catalog rows (within an ingest
    generation), each reading only its own slice of the catalog. A model stage: each worker loads the
    embedder once. When the catalog grows, only the new generation's partitions are embedded."""

    name = "embed"
    item_name = "partition"
    model = True
    always, scope, key, config_section, ui_report = True, "run", "embeddings", "mining", "embed"
    needs = ("ingest",)

    def __init__(self, cfg, **params):
        from mining.models.embedders import make_embedder

        super().__init__(cfg, **params)
        self.embedder = make_embedder(cfg.mining.embedder, cfg.models_dir)  # cheap: config only

    @property
    def out(self) -> str:
        return self.layout.embeddings(self.embedder.name)

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def settings(self) -> dict:
        return {"embedder": self.embedder.name, "partition_size": self.cfg.mining.partition_size,
                "max_pixels": self.cfg.ingest.max_pixels}

    def worker_model(self):
        return self.embedder

    def setup(self) -> None:
        self.embedder.setup()

    def _ranges(self) -> list[tuple[int, int]]:
        from stages.corpus.ingest import catalog_generations

        return partition_ranges(catalog_generations(self.cfg.root), self.cfg.mining.partition_size)

    def plan(self) -> int:
        """The ranges, in plan.json; a partition file whose range changed (another partition_size) is
        removed here, so it is embedded again."""
        fs, path = storage.fs_path(self.out)
        fs.makedirs(path, exist_ok=True)
        storage.remove_stale_tmp(self.out)
        ranges = self._ranges()
        plan_uri = EmbeddingFiles(self.out).plan
        if storage.exists(plan_uri):
            with fs.open(storage.fs_path(plan_uri)[1], "rb") as f:
                old = [tuple(r) for r in json.loads(f.read())["ranges"]]
            for k, r in enumerate(old):
                if (k >= len(ranges) or ranges[k] != r) and storage.exists(self.item_outputs(k)[0]):
                    fs.rm(storage.fs_path(self.item_outputs(k)[0])[1])
        self._remove_foreign(ranges)
        storage.atomic_write_bytes(plan_uri, json.dumps({"ranges": ranges}).encode())
        return len(ranges)

    def _remove_foreign(self, ranges: list[tuple[int, int]]) -> None:
        """A partition file whose catalog rows are not the ones in its range now (the catalog was ingested
        again with --force) is removed, so it is embedded again: its ids are compared with the catalog's."""
        from stages.corpus.ingest import catalog_ids

        for k, (lo, hi) in enumerate(ranges):
            part = self.item_outputs(k)[0]
            if not storage.exists(part):
                continue
            table = storage.parquet_file(part)
            skipped = json.loads((table.schema_arrow.metadata or {}).get(b"skipped", b"{}"))
            embedded = table.read(columns=["id"]).column("id").to_pylist()
            wanted = catalog_ids(self.cfg.root, lo, hi)
            have = set(embedded)
            if sum(skipped.values()) + len(embedded) != hi - lo or embedded != [i for i in wanted if i in have]:
                fs, path = storage.fs_path(part)
                fs.rm(path)

    def item_outputs(self, k: int) -> list[str]:
        return [self.layout.embedding_part(self.embedder.name, k)]

    def run(self, k: int) -> ItemReport:
        from stages.corpus.ingest import catalog_slice

        lo, hi = self._ranges()[k]
        records = catalog_slice(self.cfg.root, lo, hi)
        n = embed_partition(records, self.item_outputs(k)[0], self.embedder, self.cfg.ingest,
                            self.cfg.mining.batch_size)
        return ItemReport(stage=self.label, item=k, counts={"records": len(records), "embedded": n})

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def finalize(self, n: int) -> StageReport:
        from stages.corpus.ingest import catalog_size

        finalize_embeddings(self.out, n, catalog_size(self.cfg.root), tuple(self.embedder.band))
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        if m is None:
            return None
        return StageReport(stage=self.label, items=m["partitions"], outputs=[self.out],
                           counts={k: m.get(k) for k in ("embedder", "version", "images", "embedded", "skipped")})
