"""Ingest's exact dedup, partitioned by content-hash range, and the streaming merge of the catalog.

Each partition writes its ids by hash bucket (`write_hashes`). One dedup unit per (generation, bucket)
(`dedup_bucket`) reads that bucket of the generation's partitions and the ids its bucket kept in earlier
generations, and decides kept or duplicate: the first copy in source order (generation, then URI, then
partition and row) is kept. Finalize streams the partitions (each sorted by URI) in catalog order
(`merge_sorted`) and drops the rows the units marked, reading one row group per stream at a time.

The key of a row is (uri, partition, row in its partition): the order of today's catalog, whose rows within
a generation are its partitions' rows in a stable sort by URI.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing as mp
from collections import Counter
from bisect import bisect_right
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow import IMAGE_RECORD_SCHEMA, QUARANTINE_SCHEMA
from schemas.layout import CatalogFiles, RunLayout
from store import storage

BUCKETS_META = b"aceforge.buckets"  # a hashes file's footer: the bucket of each row group
BUCKET_COUNT_META = b"aceforge.bucket_count"  # and the number of buckets it was cut into
DEFAULT_BUCKETS = 64  # a plan written before the number was recorded
RANGE_META = b"aceforge.uri_range"  # an images / quarantine partition's footer: its first and last URI
KEY = [("uri", "ascending"), ("_k", "ascending"), ("_r", "ascending")]
_HASHES_SCHEMA = pa.schema([("bucket", pa.int32()), ("id", pa.string()), ("uri", pa.string()), ("_r", pa.int64())])
DEDUP_SCHEMA = pa.schema([("uri", pa.string()), ("id", pa.string()), ("duplicate_of", pa.string()),
                          ("_k", pa.int64()), ("_r", pa.int64())])  # duplicate_of null: kept
_DUP_SCHEMA = pa.schema([("uri", pa.string()), ("id", pa.string()), ("duplicate_of", pa.string())])


def plan_buckets(plan: dict) -> int:
    """The number of hash buckets of a catalog: its first plan's, for every generation."""
    return plan.get("dedup_buckets", DEFAULT_BUCKETS)


def bucket_of(ids: pa.Array, buckets: int) -> pa.Array:
    """The bucket of each content hash (hex): its first 8 hex digits as a number, scaled to [0, buckets),
    so bucket b owns one contiguous range of hashes."""
    head = [int(h[:8], 16) for h in ids.to_pylist()]
    return pa.array([(v * buckets) >> 32 for v in head], pa.int32())


def sorted_by_uri(table: pa.Table) -> pa.Table:
    """A partition's rows in a stable sort by URI, its URI range in the footer."""
    table = table.sort_by("uri")
    uris = table.column("uri")
    span = [uris[0].as_py(), uris[-1].as_py()] if table.num_rows else []
    return table.replace_schema_metadata({**(table.schema.metadata or {}), RANGE_META: json.dumps(span).encode()})


def write_hashes(uri: str, images: pa.Table, buckets: int) -> None:
    """A partition's (bucket, id, uri, row) rows, `images` sorted by URI: one row group per bucket that
    holds any, the buckets listed in the footer."""
    t = pa.table({"bucket": bucket_of(images.column("id"), buckets), "id": images.column("id"),
                  "uri": images.column("uri"), "_r": pa.array(range(images.num_rows), pa.int64())}, schema=_HASHES_SCHEMA)
    t = t.sort_by([("bucket", "ascending"), ("id", "ascending"), ("_r", "ascending")])
    col = t.column("bucket").to_pylist()
    present = sorted(set(col))
    schema = _HASHES_SCHEMA.with_metadata({BUCKETS_META: json.dumps(present).encode(),
                                           BUCKET_COUNT_META: str(buckets).encode()})
    with storage.ParquetSink(uri, schema, row_group_rows=max(1, t.num_rows)) as sink:  # a row group per write
        start = 0
        for b in present:
            stop = bisect_right(col, b)
            sink.write(t.slice(start, stop - start).cast(schema))
            start = stop


def _bucket_rows(hashes_uri: str, b: int, k: int, buckets: int) -> pa.Table | None:
    pf = storage.parquet_file(hashes_uri)
    meta = pf.schema_arrow.metadata or {}
    if int(meta.get(BUCKET_COUNT_META, b"0")) != buckets:
        raise RuntimeError(f"{hashes_uri} is cut into {meta.get(BUCKET_COUNT_META)} buckets, the plan has {buckets}")
    present = json.loads(meta.get(BUCKETS_META, b"[]"))
    if b not in present:
        return None
    t = pf.read_row_group(present.index(b), columns=["id", "uri", "_r"])
    return t.append_column("_k", pa.array([k] * t.num_rows, pa.int64()))


def generation_bounds(plan: dict) -> list[tuple[int, int]]:
    """(first, end) partition of each generation."""
    ends = plan["generations"]
    return list(zip([0, *ends[:-1]], ends))


def dedup_bucket(root: str, plan: dict, g: int, b: int) -> int:
    """One dedup unit: bucket b of generation g. Reads the bucket's rows of the generation's partitions and
    the ids the bucket kept in earlier generations (memory: one bucket); writes every row of the bucket with
    the URI it duplicates (null: kept), sorted by key. Skipped when written; returns its rows (-1: skipped)."""
    cat = CatalogFiles(RunLayout(root).catalog)
    out = cat.dedup(g, b)
    if storage.exists(out):
        return -1
    lo, hi = generation_bounds(plan)[g]
    got = [t for k in range(lo, hi) if (t := _bucket_rows(cat.part(k, "hashes"), b, k, plan_buckets(plan))) is not None]
    if not got:
        return 0  # nothing of this bucket in this generation: no table (an earlier one may hold its ids)
    rows = pa.concat_tables(got).sort_by(KEY)
    first: dict[str, str] = {}
    for e in range(g):
        if storage.exists(cat.dedup(e, b)):
            t = storage.read_parquet(cat.dedup(e, b)).filter(pc.is_null(pc.field("duplicate_of")))
            first.update(zip(t.column("id").to_pylist(), t.column("uri").to_pylist()))
    dup_of: list[str | None] = []
    for rid, uri in zip(rows.column("id").to_pylist(), rows.column("uri").to_pylist()):
        if rid in first:
            dup_of.append(first[rid])
        else:
            first[rid] = uri
            dup_of.append(None)
    table = pa.table({"uri": rows.column("uri"), "id": rows.column("id"), "duplicate_of": pa.array(dup_of, pa.string()),
                      "_k": rows.column("_k"), "_r": rows.column("_r")}, schema=DEDUP_SCHEMA)
    with storage.ParquetSink(out, DEDUP_SCHEMA, row_group_rows=max(1, DEDUP_HELD_ROWS // plan_buckets(plan))) as sink:
        sink.write(table)
    return table.num_rows


POOL_MIN_IDS = 200_000  # a generation with fewer ids runs its units in finalize's process (a pool's start costs more)


def _ray_running() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def run_units(root: str, plan: dict, g: int, workers: int) -> int:
    """The dedup units of generation g not done yet, when it is worth their start: as Ray tasks over the
    cluster when Ray runs (the Prefect-over-Ray executor's finalize), else in `workers` processes (each
    holds one bucket); returns how many ran."""
    cat = CatalogFiles(RunLayout(root).catalog)
    todo = [b for b in range(plan_buckets(plan)) if not storage.exists(cat.dedup(g, b))]
    lo, hi = generation_bounds(plan)[g]
    ids = sum(storage.parquet_file(cat.part(k, "hashes")).metadata.num_rows for k in range(lo, hi)) if todo else 0
    if len(todo) >= 2 and ids >= POOL_MIN_IDS and _ray_running():
        import ray

        # Ray tasks of one CPU each, wherever the cluster has room (the root is storage every node reaches)
        unit = ray.remote(num_cpus=1, max_retries=2)(dedup_bucket)
        ray.get([unit.remote(root, plan, g, b) for b in todo])
        return len(todo)
    if workers <= 1 or len(todo) < 2 or ids < POOL_MIN_IDS:
        for b in todo:
            dedup_bucket(root, plan, g, b)
        return len(todo)
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(dedup_bucket, repeat(root), repeat(plan), repeat(g), todo))
    return len(todo)


class Held:
    """The most rows a merge held at once: the row groups its streams had read and not yet passed."""

    def __init__(self) -> None:
        self.max_rows = 0

    def saw(self, rows: int) -> None:
        self.max_rows = max(self.max_rows, rows)


def _keys(t: pa.Table) -> list[tuple]:
    return list(zip(t.column("uri").to_pylist(), t.column("_k").to_pylist(), t.column("_r").to_pylist()))


def _pull(it: Iterator[pa.Table]) -> list | None:
    """A stream's next non-empty table as [table, its keys, rows passed, the stream]; None at its end."""
    for t in it:
        if t.num_rows:
            return [t, _keys(t), 0, it]
    return None


def merge_sorted(streams: Iterable[Iterator[pa.Table]], held: Held | None = None) -> Iterator[pa.Table]:
    """The rows of streams each sorted by key, merged in key order: each step emits every pending row up
    to the smallest last key of the streams' pending tables (memory: one table per stream)."""
    pending = [p for it in streams if (p := _pull(it)) is not None]
    while pending:
        if held is not None:
            held.saw(sum(p[0].num_rows for p in pending))
        bound = min(p[1][-1] for p in pending)
        pieces, nxt = [], []
        for t, keys, at, it in pending:
            n = bisect_right(keys, bound, lo=at)
            pieces.append(t.slice(at, n - at))
            q = [t, keys, n, it] if n < len(keys) else _pull(it)
            if q is not None:
                nxt.append(q)
        pending = nxt
        yield pa.concat_tables(pieces).sort_by(KEY)


PART_ROW_GROUP = 8192  # rows per row group of a partition's tables: what a merge reads of one at a time
DEDUP_HELD_ROWS = 65536  # the rows of one row group of every bucket's table together


def write_part(uri: str, table: pa.Table) -> None:
    """A partition's table (sorted by URI) in row groups of PART_ROW_GROUP rows."""
    with storage.ParquetSink(uri, table.schema, row_group_rows=PART_ROW_GROUP) as sink:
        sink.write(table)


def _row_groups(uri: str) -> Iterator[pa.Table]:
    pf = storage.parquet_file(uri)
    for i in range(pf.metadata.num_row_groups):
        yield pf.read_row_group(i).replace_schema_metadata(None)


def _part_rows(uri: str, k: int) -> Iterator[pa.Table]:
    r = 0
    for t in _row_groups(uri):
        t = t.append_column("_k", pa.array([k] * t.num_rows, pa.int64()))
        yield t.append_column("_r", pa.array(range(r, r + t.num_rows), pa.int64()))
        r += t.num_rows


def part_chains(uris: list[tuple[int, str]]) -> list[Iterator[pa.Table]]:
    """Streams over partition files (k, uri), each sorted by URI: partitions whose URI ranges do not overlap
    are read one after another in one stream, so a merge holds one row group per overlapping partition (the
    partitions of a listing are consecutive runs of its sorted files: usually one stream, plus one per tar)."""
    spans = []
    for k, uri in uris:
        span = json.loads((storage.parquet_file(uri).schema_arrow.metadata or {}).get(RANGE_META, b"[]"))
        if span:
            spans.append(((span[0], k), (span[1], k), k, uri))
    spans.sort()
    chains: list[list[tuple[int, str]]] = []
    ends: list[tuple[tuple, int]] = []  # (last key of a chain, its index)
    for first, last, k, uri in spans:
        if ends and ends[0][0] < first:
            _, c = heapq.heappop(ends)
        else:
            c = len(chains)
            chains.append([])
        chains[c].append((k, uri))
        heapq.heappush(ends, (last, c))
    return [_chain(c) for c in chains]


def _chain(parts: list[tuple[int, str]]) -> Iterator[pa.Table]:
    for k, uri in parts:
        yield from _part_rows(uri, k)


def dedup_streams(root: str, g: int, buckets: int) -> list[Iterator[pa.Table]]:
    """The duplicate rows of generation g, one stream per bucket table, each sorted by key."""
    cat = CatalogFiles(RunLayout(root).catalog)

    def dups(uri: str) -> Iterator[pa.Table]:
        for t in _row_groups(uri):
            yield t.filter(pc.is_valid(t.column("duplicate_of")))

    return [dups(cat.dedup(g, b)) for b in range(buckets) if storage.exists(cat.dedup(g, b))]


def _row_ids(t: pa.Table) -> pa.Array:
    return pc.add(pc.multiply(t.column("_k"), 1 << 32), t.column("_r"))


def drop_duplicates(images: Iterator[pa.Table], dups: Iterator[pa.Table]) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(kept rows, duplicate rows) of each image table, both streams in key order; an error when a
    duplicate names no image row."""
    pending = _pull(dups)
    for batch in images:
        last = _keys(batch.slice(batch.num_rows - 1))[0]
        mine = []
        while pending is not None:
            t, keys, at, _ = pending
            n = bisect_right(keys, last, lo=at)
            mine.append(t.slice(at, n - at))
            if n < len(keys):
                pending[2] = n
                break
            pending = _pull(dups)
        drop = pa.concat_tables(mine) if mine else DEDUP_SCHEMA.empty_table()
        keep = batch.filter(pc.invert(pc.is_in(_row_ids(batch), value_set=_row_ids(drop)))) if drop.num_rows else batch
        if batch.num_rows - keep.num_rows != drop.num_rows:
            raise RuntimeError(f"dedup results name {drop.num_rows} rows of this batch, {batch.num_rows - keep.num_rows} match")
        yield keep, drop
    if pending is not None:
        raise RuntimeError(f"dedup results name rows no partition holds, e.g. {pending[1][pending[2]]}")


class _Groups:
    """A sink's writes regrouped into row groups of the sink's size, cut anew at each generation (the row
    groups a generation's whole table made)."""

    def __init__(self, sink: storage.ParquetSink, schema: pa.Schema):
        self.sink, self.schema, self.rows = sink, schema, []

    def write(self, table: pa.Table) -> None:
        self.rows.append(table.select(self.schema.names).cast(self.schema))
        if sum(t.num_rows for t in self.rows) >= self.sink.row_group_rows:
            t = pa.concat_tables(self.rows)
            cut = t.num_rows - t.num_rows % self.sink.row_group_rows
            self.sink.write(t.slice(0, cut))
            self.rows = [t.slice(cut)]

    def end_generation(self) -> None:
        if self.rows:
            self.sink.write(pa.concat_tables(self.rows))
        self.rows = []


def merge_catalog(root: str, bounds: list[tuple[int, int]], buckets: int,
                  held: Held | None) -> tuple[int, int, int, Counter, list[dict]]:
    """Write images.parquet, duplicates.parquet and the quarantine from the partitions and the dedup units'
    tables, generation after generation, each in key order; returns (seen, accepted, duplicates,
    quarantined by reason, the generations' cumulative rows and kept-id digests)."""
    cat, lay = CatalogFiles(RunLayout(root).catalog), RunLayout(root)
    seen = accepted = duplicates = 0
    quarantined: Counter[str] = Counter()
    generations: list[dict] = []
    digest = hashlib.sha256()  # of the kept ids in order: a catalog ingested again with other content differs
    with storage.ParquetSink(cat.images, IMAGE_RECORD_SCHEMA) as img_sink, \
            storage.ParquetSink(cat.quarantine, QUARANTINE_SCHEMA) as bad_sink, \
            storage.ParquetSink(cat.duplicates, _DUP_SCHEMA) as dup_sink:
        img_out, bad_out = _Groups(img_sink, IMAGE_RECORD_SCHEMA), _Groups(bad_sink, QUARANTINE_SCHEMA)
        dup_out = _Groups(dup_sink, _DUP_SCHEMA)
        for g, (lo, hi) in enumerate(bounds):
            images = merge_sorted(part_chains([(k, lay.ingest_part(k, "images")) for k in range(lo, hi)]), held)
            sep = b""
            for keep, drop in drop_duplicates(images, merge_sorted(dedup_streams(root, g, buckets), held)):
                img_out.write(keep)
                dup_out.write(drop)
                seen += keep.num_rows + drop.num_rows
                accepted += keep.num_rows
                duplicates += drop.num_rows
                if keep.num_rows:
                    digest.update(sep + "\n".join(keep.column("id").to_pylist()).encode())
                    sep = b"\n"
            bad_parts = [(k, lay.ingest_part(k, "quarantine")) for k in range(lo, hi)]
            for bad in merge_sorted(part_chains(bad_parts), held):
                bad_out.write(bad)
                seen += bad.num_rows
                quarantined.update(bad.column("reason").to_pylist())
            for out in (img_out, dup_out, bad_out):
                out.end_generation()
            generations.append({"partitions": hi, "rows": accepted, "ids": digest.hexdigest()[:16]})
    return seen, accepted, duplicates, quarantined, generations
