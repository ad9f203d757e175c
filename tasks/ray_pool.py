"""Model inference in Ray actors: a pool of embedder actors, each loading its model once.

Actors get URIs, not pixels: they read and decode the images themselves. Each actor asks Ray for the
resources its model wrapper declares (a GPU on GPU nodes, a fraction of a CPU here). A local Ray starts by
itself when none is running and RAY_ADDRESS is not set.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import Counter

import numpy as np
import ray

from mining.embedders import make_embedder
from schemas.records import ImageRecord
from tasks.embed import decode_records

RUNTIME_ENV = {"env_vars": {"HF_HUB_OFFLINE": "1"}}


_STARTED = False
_LOCK = threading.Lock()


def ensure_ray() -> None:
    global _STARTED
    with _LOCK:  # units in threads may all ask at once: one init
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), runtime_env=RUNTIME_ENV, include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True)
            _STARTED = True


def stop_ray() -> None:
    """Shut down Ray if ensure_ray started it (a Ray someone else started is left alone)."""
    global _STARTED
    if _STARTED and ray.is_initialized():
        ray.shutdown()
    _STARTED = False


class EmbedActor:
    def __init__(self, kind: str, models_dir: str, max_pixels: int):
        self.embedder = make_embedder(kind, models_dir)
        self.embedder.setup()
        self.max_pixels = max_pixels

    def info(self) -> tuple[str, str, int, tuple[float, float]]:
        e = self.embedder
        return e.name, e.version, e.dim, tuple(e.band)

    def embed(self, records: list[ImageRecord]) -> tuple[list[str], np.ndarray, dict[str, int]]:
        ids, images, skipped = decode_records(records, self.max_pixels)
        vecs = self.embedder(images) if images else np.zeros((0, self.embedder.dim), np.float32)
        return ids, vecs.astype(np.float16), dict(skipped)


class EmbedPool:
    """n actors of EmbedActor; `embed` spreads record batches over them and returns results in order.

    Safe to call from several threads at once (a Prefect unit per thread): each call holds its own object
    refs, so no call can take or drop another's results (Ray's ActorPool keeps one shared queue of pending
    results, and concurrent `map`s on it lost batches). Actors run their calls one at a time, in order."""

    def __init__(self, kind: str, models_dir: str, max_pixels: int, actors: int = 2):
        ensure_ray()
        probe = make_embedder(kind, models_dir)
        res = probe.resources()
        cls = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus)(EmbedActor)
        self.actors = [cls.remote(kind, models_dir, max_pixels) for _ in range(actors)]
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.name, self.version, self.dim, self.band = ray.get(self.actors[0].info.remote())

    def embed(self, records: list[ImageRecord], batch_size: int) -> tuple[list[str], np.ndarray, dict[str, int]]:
        batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
        with self._lock:  # round-robin start shared by all callers, so concurrent calls spread over actors
            start = next(self._next)
        refs = [self.actors[(start + i) % len(self.actors)].embed.remote(b) for i, b in enumerate(batches)]
        ids: list[str] = []
        vecs = []
        skipped: Counter[str] = Counter()
        for b, (b_ids, b_vecs, b_skipped) in zip(batches, ray.get(refs)):
            if len(b_ids) + sum(b_skipped.values()) != len(b) or len(b_vecs) != len(b_ids):
                raise RuntimeError(f"embedding batch lost records: {len(b)} in, {len(b_ids)} embedded, "
                                   f"{sum(b_skipped.values())} skipped")
            ids += b_ids
            vecs.append(b_vecs)
            skipped.update(b_skipped)
        x = np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float16)
        return ids, x, dict(skipped)

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
