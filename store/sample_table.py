"""The samples table of a shard set (samples.parquet, the per-sample manifest beside manifest.parquet).

One row per written sample: its key, shard, task, instruction, size, its quality scores (mining/quality.py,
null where not measured) and, for the few samples the report shows, its thumbnail strip's path. A packing unit
collects its rows as its samples pass the gate and writes <prefix>-<unit>.samples.parquet (and its thumbnails
under thumbs/) before its .unit.json; finalize concatenates the units' tables in plan order. Readers (the
report, `aceforge shards filter`) read its columns, never the tars.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from mining.quality import FIELDS, thumbnail_strip
from schemas.layout import ShardFiles
from schemas.records import AceSample
from schemas.shard_layout import sanitize_key
from store import storage

SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("task", pa.string()),
                    ("instruction", pa.string()), ("inputs", pa.int32()), ("has_mask", pa.bool_()),
                    ("width", pa.int32()), ("height", pa.int32()),
                    *[(f, pa.float64()) for f in FIELDS], ("generators", pa.string()),
                    ("thumb", pa.string())])
COLUMNS = tuple(SCHEMA.names)


def _size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


class UnitRows:
    """One packing unit's rows and thumbnails (`thumbs` per task: the first samples of each task)."""

    def __init__(self, out_uri: str, prefix: str, unit: str, thumbs: int):
        self.out_uri, self.prefix, self.unit, self.thumbs = out_uri, prefix, unit, thumbs
        self.rows: list[dict] = []
        self.per_task: Counter[str] = Counter()

    def add(self, s: AceSample) -> AceSample:
        key = sanitize_key(s.key)
        thumb = None
        if self.per_task[s.task] < self.thumbs:
            self.per_task[s.task] += 1
            thumb = f"{ShardFiles.thumb_dir(self.prefix, self.unit)}/{ShardFiles.thumb_name(key)}"
            storage.atomic_write_bytes(storage.join(self.out_uri, thumb), thumbnail_strip(s))
        w, h = _size(s.target.image)
        self.rows.append({"key": key, "task": s.task, "instruction": s.instruction, "inputs": len(s.units),
                          "has_mask": any(u.mask is not None for u in s.units), "width": w, "height": h,
                          **{f: s.quality.get(f) for f in FIELDS},
                          "generators": ",".join(sorted({g.name for g in s.lineage.generators})), "thumb": thumb})
        return s

    def write(self, finished: list[dict]) -> None:
        """Write the unit's table; `finished` is its shards' stats (their keys, in writing order)."""
        shard_of = {k: st["shard"] for st in finished for k in st["keys"]}
        for r in self.rows:
            r["shard"] = shard_of[r["key"]]
        storage.atomic_write_parquet(storage.join(self.out_uri, ShardFiles.unit_samples_name(self.prefix, self.unit)),
                                     pa.Table.from_pylist(self.rows, schema=SCHEMA))


def merge(out_uri: str, prefix: str, units: list[str]) -> int:
    """samples.parquet from the units' tables, in `units` order; returns its rows. A unit written before the
    samples table existed has none: its rows are missing and the count says so to the caller."""
    tables = []
    for u in units:
        uri = storage.join(out_uri, ShardFiles.unit_samples_name(prefix, u))
        if storage.exists(uri):
            tables.append(storage.read_parquet(uri).select(COLUMNS).cast(SCHEMA))
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    storage.atomic_write_parquet(ShardFiles(out_uri).samples, table)
    return table.num_rows


def read_samples(uri: str, columns: list[str] | None = None) -> pa.Table:
    """The samples table of a complete shard set (only `columns` when given)."""
    path = ShardFiles(uri).samples
    if not storage.exists(path):
        raise FileNotFoundError(f"{uri} has no {ShardFiles.SAMPLES} (packed before sample tables existed: pack it again)")
    fs, p = storage.fs_path(path)
    import pyarrow.parquet as pq

    return pq.read_table(p, filesystem=storage.arrow_fs(fs), columns=columns)


def table_from_shards(uri: str) -> pa.Table:
    """The samples table rebuilt from a set's tars (a set packed before samples tables, or written by one
    writer): every sample's json and target size, no thumbnails. Reads every record: a fallback, not the way."""
    import json

    from schemas.io import iter_tar_samples
    from store.shards import read_manifest

    rows = []
    for row in read_manifest(uri):
        for raw in iter_tar_samples(storage.join(uri, row.shard)):
            meta = json.loads(raw["json"])
            w, h = _size(raw[meta["target"]["image"]])
            q = meta.get("quality") or {}
            rows.append({"key": raw["__key__"], "shard": row.shard, "task": meta["task"],
                         "instruction": meta["instruction"], "inputs": len(meta["units"]),
                         "has_mask": any(u.get("mask") for u in meta["units"]), "width": w, "height": h,
                         **{f: q.get(f) for f in FIELDS},
                         "generators": ",".join(sorted({g["name"] for g in meta["lineage"].get("generators", [])})),
                         "thumb": None})
    return pa.Table.from_pylist(rows, schema=SCHEMA)
