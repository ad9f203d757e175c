"""fsspec storage helpers: atomic writes through a temporary name, and completion markers.

A stage's output directory counts as complete only when its marker exists; the marker is written last.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.io import (TMP_TAG, absolute, arrow_fs, atomic_write_bytes, exists, finalize, fs_path, is_local,  # noqa: F401
                        join, parent, tmp_name)
from schemas.layout import MARKER  # noqa: F401  (what write_marker writes)


def atomic_write_parquet(uri: str, table: pa.Table, row_group_rows: int | None = None) -> None:
    """`row_group_rows`: rows per row group (None: pyarrow's default, one group for most tables); a table of
    images in small groups lets a reader of its first rows decode only those."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_rows)
    atomic_write_bytes(uri, buf.getvalue())


def read_parquet(uri: str) -> pa.Table:
    fs, path = fs_path(uri)
    return pq.read_table(path, filesystem=arrow_fs(fs))


def parquet_file(uri: str) -> pq.ParquetFile:
    """An open parquet file (footer read), for streaming its row batches."""
    fs, path = fs_path(uri)
    return pq.ParquetFile(arrow_fs(fs).open_input_file(path))


class ParquetSink:
    """A parquet file written table by table (memory: one table at a time) under a temporary name, moved
    to its final name when the block ends without an error (removed otherwise)."""

    def __init__(self, uri: str, schema: pa.Schema, row_group_rows: int = 8192):
        self.fs, self.path = fs_path(uri)
        self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
        self.tmp = tmp_name(self.path)
        self.schema = schema
        self.row_group_rows = row_group_rows  # small row groups: a reader of a row range reads little else
        self.writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "ParquetSink":
        self.writer = pq.ParquetWriter(self.tmp, self.schema, filesystem=arrow_fs(self.fs), compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        assert self.writer is not None
        if table.num_rows:
            self.writer.write_table(table, row_group_size=self.row_group_rows)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.writer is not None
        self.writer.close()
        if exc_type is None:
            finalize(self.fs, self.tmp, self.path)
        elif self.fs.exists(self.tmp):
            self.fs.rm(self.tmp)


def read_row_range(pf: pq.ParquetFile, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
    """Rows [start, stop) of a parquet file, reading only the row groups that hold them."""
    groups, first, pos = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if pos + n > start and pos < stop:
            groups.append(g)
            first = pos if first is None else first
        pos += n
    if not groups:
        return pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
    t = pf.read_row_groups(groups, columns=columns)
    return t.slice(start - first, min(stop, pos) - start)


def write_marker(dir_uri: str, payload: dict[str, Any]) -> None:
    atomic_write_bytes(join(dir_uri, MARKER), json.dumps(payload, indent=1, sort_keys=True).encode())


def read_marker(dir_uri: str) -> dict[str, Any] | None:
    fs, path = fs_path(join(dir_uri, MARKER))
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode())


def remove_stale_tmp(dir_uri: str) -> list[str]:
    """Delete temporary files left by an interrupted writer; returns what was removed."""
    fs, path = fs_path(dir_uri)
    if not fs.exists(path):
        return []
    stale = [p for p in fs.ls(path, detail=False) if TMP_TAG in os.path.basename(p)]
    for p in stale:
        fs.rm(p)
    return stale
