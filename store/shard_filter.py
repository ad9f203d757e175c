"""A shard set filtered by its samples table: `aceforge shards filter SET OUT --where EXPR`.

The expression (store/where.py) selects rows of SET's samples table; the samples with those keys are read
from SET's tars as raw members and written as a new shard set at OUT (store/shards.py's writer: tars, stats,
manifest, card, marker), with its own samples table (shards renamed), the kept samples' thumbnails and its
report. OUT must not hold a shard set already; SET is only read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from schemas.config import ShardConfig
from schemas.io import iter_tar_samples
from schemas.layout import ShardFiles
from schemas.records import AceSample
from schemas.shard_layout import decode_sample
from store import storage
from store.sample_table import SCHEMA, read_samples, table_from_shards
from store.shards import load_done_stats, read_manifest, write_shard_set
from store.where import select


@dataclass
class FilterReport:
    uri: str
    total: int
    kept: int
    shards: int


def filter_shard_set(src: str, out: str, where: str) -> FilterReport:
    marker = storage.read_marker(src)
    if marker is None:
        raise FileNotFoundError(f"{src} is not a complete shard set (no {storage.MARKER})")
    if storage.absolute(out).rstrip("/") == storage.absolute(src).rstrip("/"):
        raise ValueError("OUT must be another folder than SET")
    if storage.read_marker(out) is not None:
        raise FileExistsError(f"{out} already holds a complete shard set: remove it or choose another OUT")
    table = read_samples(src) if storage.exists(ShardFiles(src).samples) else table_from_shards(src)
    kept = select(table, where)
    keys = set(kept.column("key").to_pylist())
    shards = set(kept.column("shard").to_pylist())

    def samples() -> Iterator[AceSample]:
        for row in read_manifest(src):
            if row.shard not in shards:  # no kept sample in it: not read
                continue
            for raw in iter_tar_samples(storage.join(src, row.shard)):
                if raw["__key__"] in keys:
                    yield decode_sample(raw)

    cfg = ShardConfig.model_validate(marker["config"])
    extra = {"filter": {"source": storage.absolute(src), "where": where, "source_samples": table.num_rows,
                        "kept": kept.num_rows},
             "supervision": marker.get("supervision") or {}, "quality": marker.get("quality") or {}}
    def before_marker() -> dict:  # the samples table before the marker: a complete set always has one
        n = _write_table(src, out, cfg.prefix, kept)
        if n != kept.num_rows:
            raise RuntimeError(f"{src}: the samples table selects {kept.num_rows} samples, the tars gave {n}")
        return extra

    rep = write_shard_set(samples(), out, cfg, marker_extra=before_marker)
    from store.set_report import write_report

    write_report(out, stage=f"filter of {src}")
    return FilterReport(out, table.num_rows, kept.num_rows, rep.shards)


def _write_table(src: str, out: str, prefix: str, kept: pa.Table) -> int:
    """OUT's samples table (each key's new shard, from the writer's stats files) and the kept thumbnails;
    returns the samples the stats hold."""
    shard_of = {k: stats["shard"] for stats in load_done_stats(out, prefix) for k in stats["keys"]}
    rows = [r for r in kept.to_pylist() if r["key"] in shard_of]
    for r in rows:
        r["shard"] = shard_of[r["key"]]
        if r["thumb"]:
            fs, path = storage.fs_path(storage.join(src, r["thumb"]))
            if fs.exists(path):
                with fs.open(path, "rb") as f:
                    storage.atomic_write_bytes(storage.join(out, r["thumb"]), f.read())
            else:
                r["thumb"] = None
    storage.atomic_write_parquet(ShardFiles(out).samples, pa.Table.from_pylist(rows, schema=SCHEMA))
    return len(shard_of)
