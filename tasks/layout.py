"""Where everything lands under a run's root: the one place that spells paths.

    <root>/catalog/          plan.json, parts/part-NNNNN.{images,quarantine}.parquet, images.parquet, ...
    <root>/embeddings/<e>/   part-NNNNN.parquet (float16 vectors + ids)
    <root>/clusters/<e>/     centroids.npy, assignments.parquet, split_log.json
    <root>/pairs/<preset>/   batches/batch-NNNNN/, the merged tables, instructed/
    <root>/synth/<kind>/     synthesized images, masks and records
    <root>/shards/<name>/    WebDataset tars, manifest.parquet
    <root>/checkpoints/<run>/ and checkpoints/exports/<run>/
    <root>/cache/<what>/     caches (instruction replies)

Every stage directory is complete when its marker (`_SUCCESS.json`, written last) exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks import storage


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@dataclass(frozen=True)
class RunLayout:
    root: str

    def _at(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @staticmethod
    def marker(dir_uri: str) -> str:
        return storage.join(dir_uri, storage.MARKER)

    # ingest
    @property
    def catalog(self) -> str:
        return self._at("catalog")

    @property
    def ingest_plan(self) -> str:
        return self._at("catalog", "plan.json")

    def ingest_part(self, k: int, what: str) -> str:
        """what: images or quarantine."""
        return self._at("catalog", "parts", f"part-{k:05d}.{what}.parquet")

    # embedding and clustering
    def embeddings(self, embedder: str) -> str:
        return self._at("embeddings", _safe(embedder))

    def embedding_part(self, embedder: str, k: int) -> str:
        return storage.join(self.embeddings(embedder), f"part-{k:05d}.parquet")

    def clusters(self, embedder: str) -> str:
        return self._at("clusters", _safe(embedder))

    # pairs
    def pairs(self, preset: str) -> str:
        return self._at("pairs", preset)

    def pair_batch(self, preset: str, k: int) -> str:
        return storage.join(self.pairs(preset), "batches", f"batch-{k:05d}")

    def instructed(self, preset: str) -> str:
        return storage.join(self.pairs(preset), "instructed")

    # synthesis, shards, training
    def synth(self, kind: str) -> str:
        return self._at("synth", kind)

    def shards(self, name: str) -> str:
        return self._at("shards", name)

    def checkpoints(self, run: str) -> str:
        return self._at("checkpoints", run)

    def exports(self, run: str) -> str:
        return self._at("checkpoints", "exports", run)

    def cache(self, what: str) -> str:
        return self._at("cache", what)
