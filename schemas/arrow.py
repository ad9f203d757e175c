"""Pyarrow schemas derived from the pydantic records, and conversions both ways.

The schema is derived from the model's annotations so the two cannot drift apart.
"""

from __future__ import annotations

import types
import typing
from enum import Enum

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from schemas.records import (
    AceSample,
    EmbeddingPartition,
    ImageRecord,
    PairRecord,
    QuarantineRecord,
    ShardManifestRow,
)

_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), bytes: pa.binary(),
}


def _arrow_type(tp: typing.Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for one annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only Optional unions are supported, got {tp}")
        return _arrow_type(args[0])[0], True
    if origin is list:
        (item,) = typing.get_args(tp)
        return pa.list_(_arrow_type(item)[0]), False
    if origin is dict:
        k, v = typing.get_args(tp)
        return pa.map_(_arrow_type(k)[0], _arrow_type(v)[0]), False
    if isinstance(tp, type) and issubclass(tp, Enum):
        return pa.string(), False
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return pa.struct(arrow_schema(tp)), False
    if tp in _SCALARS:
        return _SCALARS[tp], False
    raise TypeError(f"no arrow type for {tp!r}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    hints = typing.get_type_hints(model)
    fields = []
    for name in model.model_fields:
        t, nullable = _arrow_type(hints[name])
        fields.append(pa.field(name, t, nullable=nullable))
    return pa.schema(fields)


IMAGE_RECORD_SCHEMA = arrow_schema(ImageRecord)
QUARANTINE_SCHEMA = arrow_schema(QuarantineRecord)
PAIR_SCHEMA = arrow_schema(PairRecord)
ACE_SAMPLE_SCHEMA = arrow_schema(AceSample)
MANIFEST_SCHEMA = arrow_schema(ShardManifestRow)


def _maps_to_dicts(value: typing.Any, t: pa.DataType) -> typing.Any:
    """pyarrow returns maps as lists of (key, value) tuples; pydantic wants dicts."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return {k: _maps_to_dicts(v, t.item_type) for k, v in value}
    if pa.types.is_struct(t):
        return {f.name: _maps_to_dicts(value[f.name], f.type) for f in t}
    if pa.types.is_list(t):
        return [_maps_to_dicts(v, t.value_type) for v in value]
    return value


def to_table(records: typing.Sequence[BaseModel], model: type[BaseModel]) -> pa.Table:
    schema = arrow_schema(model)
    return pa.Table.from_pylist([r.model_dump(mode="python") for r in records], schema=schema)


def from_table(table: pa.Table, model: type[BaseModel]) -> list[BaseModel]:
    schema = arrow_schema(model)
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"table lacks columns {missing} needed for {model.__name__}")
    rows = table.select(schema.names).to_pylist()
    types_ = {f.name: f.type for f in schema}
    return [model(**{k: _maps_to_dicts(v, types_[k]) for k, v in row.items()}) for row in rows]


def embedding_schema(dim: int, embedder: str, embedder_version: str) -> pa.Schema:
    return pa.schema(
        [pa.field("id", pa.string(), nullable=False),
         pa.field("vector", pa.list_(pa.float16(), dim), nullable=False)],
        metadata={b"embedder": embedder.encode(), b"embedder_version": embedder_version.encode()},
    )


def embedding_to_table(part: EmbeddingPartition) -> pa.Table:
    n, dim = part.vectors.shape
    schema = embedding_schema(dim, part.embedder, part.embedder_version)
    flat = pa.array(np.ascontiguousarray(part.vectors).reshape(-1), type=pa.float16())
    vec = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.Table.from_arrays([pa.array(part.ids, pa.string()), vec], schema=schema)


def embedding_from_table(table: pa.Table) -> EmbeddingPartition:
    meta = table.schema.metadata or {}
    if b"embedder" not in meta:
        raise ValueError("embedding table has no 'embedder' in its schema metadata")
    col = table.column("vector").combine_chunks()
    dim = col.type.list_size
    vectors = col.flatten().to_numpy(zero_copy_only=False).astype(np.float16).reshape(-1, dim)
    return EmbeddingPartition(
        ids=table.column("id").to_pylist(), vectors=vectors,
        embedder=meta[b"embedder"].decode(), embedder_version=meta.get(b"embedder_version", b"").decode(),
    )
