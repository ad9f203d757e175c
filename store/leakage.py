"""The leakage check: which training samples show an evaluation image (`aceforge shards leakage EVAL SET...`).

The evaluation source (any ingest source: a folder, a glob, a list, tars) is read whole and indexed
(mining/leakage.py); every image of every sample of the shard sets (its inputs and its target) is then
matched in batches, so memory holds the evaluation index and one batch. The report (JSON) lists each leaked
sample with its set, key, the member that matched, the level (exact / duplicate / near), the evaluation
image and the similarity, and the counts per set and level.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from PIL import Image

from mining.leakage import LEVELS, EvalIndex
from schemas.io import iter_tar_samples
from store import storage
from store.shards import read_manifest
from store.sources import expand_source, iter_tar, read_uri

IMAGE_EXTS = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
BATCH = 64


@dataclass
class LeakageReport:
    eval_images: int
    embedder: str
    band: tuple[float, float]
    checked: dict[str, int] = field(default_factory=dict)  # images checked per set
    leaked: list[dict] = field(default_factory=list)  # one row per matching member, levels in `LEVELS`

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter] = {}
        for r in self.leaked:
            out.setdefault(r["set"], Counter())[r["level"]] += 1
        return {s: dict(c) for s, c in out.items()}

    def keys(self, set_uri: str, levels: tuple[str, ...] = LEVELS) -> set[str]:
        return {r["key"] for r in self.leaked if r["set"] == set_uri and r["level"] in levels}

    def as_dict(self) -> dict:
        return {"eval_images": self.eval_images, "embedder": self.embedder, "band": list(self.band),
                "checked": self.checked, "counts": self.counts(), "leaked": self.leaked}


def eval_images(source: str) -> Iterator[tuple[str, Image.Image]]:
    files, tars = expand_source(source, IMAGE_EXTS)
    for uri in files:
        yield uri, _open(read_uri(uri), uri)
    for t in tars:
        for uri, data, _ in iter_tar(t, IMAGE_EXTS, 1 << 28):
            if data is not None:
                yield uri, _open(data, uri)


def _open(data: bytes, what: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except Exception as e:  # PIL raises many kinds: an evaluation image that does not decode is an error
        raise ValueError(f"evaluation image {what} does not decode: {e}") from None


def _members(set_uri: str) -> Iterator[tuple[str, str, str, Image.Image]]:
    """(shard, key, member, image) for every image of every sample (masks are not pictures: left out)."""
    for row in read_manifest(set_uri):
        for raw in iter_tar_samples(storage.join(set_uri, row.shard)):
            meta = json.loads(raw["json"])
            for unit in [*meta["units"], meta["target"]]:
                yield row.shard, raw["__key__"], unit["image"], _open(raw[unit["image"]], f"{raw['__key__']}.{unit['image']}")


def check_leakage(eval_source: str, sets: list[str], embed, progress=None) -> LeakageReport:
    """Match every image of `sets` against the evaluation source with `embed` (an image embedder: name, band)."""
    named = list(eval_images(eval_source))
    if not named:
        raise FileNotFoundError(f"no evaluation images in {eval_source}")
    index = EvalIndex.build([n for n, _ in named], [im for _, im in named], embed, tuple(embed.band))
    rep = LeakageReport(len(named), f"{embed.name}/{embed.version}", tuple(embed.band))
    for s in sets:
        batch: list[tuple[str, str, str, Image.Image]] = []
        rep.checked[s] = 0

        def flush() -> None:
            for (shard, key, member, _), (level, j, sim) in zip(batch, index.match([b[3] for b in batch], embed)):
                if level is not None:
                    rep.leaked.append({"set": s, "shard": shard, "key": key, "member": member, "level": level,
                                       "eval_image": index.names[j], "similarity": round(sim, 5)})
            rep.checked[s] += len(batch)
            if progress:
                progress(len(batch))
            batch.clear()

        for m in _members(s):
            batch.append(m)
            if len(batch) >= BATCH:
                flush()
        flush()
    return rep


def leakage_report_uri(root: str, eval_source: str, sets: list[str]) -> str:
    """Where a check of `eval_source` against `sets` keeps its report under a run root."""
    import hashlib

    from schemas.layout import RunLayout

    digest = hashlib.sha256(json.dumps([storage.absolute(eval_source), [storage.absolute(s) for s in sets]])
                            .encode()).hexdigest()[:16]
    return RunLayout(storage.absolute(root)).leakage(digest)


def write_leakage_report(rep: LeakageReport, uri: str) -> None:
    storage.atomic_write_bytes(uri, json.dumps(rep.as_dict(), indent=1).encode())
