import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from schemas.arrow import (
    ACE_SAMPLE_SCHEMA,
    PAIR_SCHEMA,
    embedding_from_table,
    embedding_to_table,
    from_table,
    to_table,
)
from schemas.records import (
    AceSample,
    EmbeddingPartition,
    Generator,
    ImageRecord,
    Lineage,
    PairRecord,
    QuarantineReason,
    QuarantineRecord,
    ShardManifestRow,
)


def _parquet_roundtrip(table: pa.Table) -> pa.Table:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return pq.read_table(io.BytesIO(buf.getvalue()))


def test_records_round_trip_through_parquet(samples):
    lineage = Lineage(source_ids=["a", "b"], generators=[Generator(name="siglip", version="1")],
                      scores={"cos": 0.91, "classifier": 0.97})
    cases = [
        (ImageRecord, [ImageRecord(id="ab" * 32, uri="/x/a.jpg", width=10, height=20, format="JPEG",
                                   mode="CMYK", source="/x", nbytes=123)]),
        (QuarantineRecord, [QuarantineRecord(uri="/x/b.png", reason=QuarantineReason.TRUNCATED,
                                             detail="ends early", source="/x")]),
        (PairRecord, [PairRecord(pair_id="p", source_id="a", target_id="b", task="general_editing",
                                 similarity=0.9, scores={"cls": 0.95}, instruction=None, lineage=lineage)]),
        (ShardManifestRow, [ShardManifestRow(shard="s-000000.tar", samples=3, bytes=10, sha256="f" * 64,
                                             counts_by_task={"general_editing": 2, "inpainting": 1})]),
        (AceSample, samples[:4]),
    ]
    for model, records in cases:
        back = from_table(_parquet_roundtrip(to_table(records, model)), model)
        assert back == records, model.__name__


def test_derived_arrow_types():
    lineage = PAIR_SCHEMA.field("lineage").type
    assert pa.types.is_struct(lineage)
    gens = lineage.field("generators").type
    assert pa.types.is_list(gens) and gens.value_type.field("name").type == pa.string()
    assert pa.types.is_map(PAIR_SCHEMA.field("scores").type)
    assert PAIR_SCHEMA.field("instruction").nullable and not PAIR_SCHEMA.field("task").nullable
    unit = ACE_SAMPLE_SCHEMA.field("target").type
    assert unit.field("image").type == pa.binary()


def test_embedding_partition_round_trip_is_bit_exact():
    rng = np.random.default_rng(1)
    vec = rng.standard_normal((5, 12)).astype(np.float16)
    part = EmbeddingPartition(ids=[f"i{k}" for k in range(5)], vectors=vec, embedder="offline-phash", embedder_version="2")
    back = embedding_from_table(_parquet_roundtrip(embedding_to_table(part)))
    assert back.ids == part.ids and back.embedder == "offline-phash" and back.embedder_version == "2"
    assert back.vectors.dtype == np.float16 and np.array_equal(back.vectors.view(np.uint16), vec.view(np.uint16))


def test_embedding_partition_rejects_wrong_dtype_and_shape():
    with pytest.raises(ValidationError, match="float16"):
        EmbeddingPartition(ids=["a"], vectors=np.zeros((1, 4), np.float32), embedder="e", embedder_version="1")
    with pytest.raises(ValidationError, match="len\\(ids\\)"):
        EmbeddingPartition(ids=["a", "b"], vectors=np.zeros((1, 4), np.float16), embedder="e", embedder_version="1")


def test_embedding_table_without_embedder_is_refused():
    t = pa.table({"id": ["a"], "vector": pa.array([[1.0]], pa.list_(pa.float16(), 1))})
    with pytest.raises(ValueError, match="embedder"):
        embedding_from_table(t)
