"""Exact dedup by hash bucket: the same catalog as a merge holding every id, with memory bounded by a
bucket and a batch."""
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from schemas.config import IngestConfig
from schemas.layout import CatalogFiles, RunLayout
from stages.corpus import ingest_dedup
from stages.corpus.ingest import _plan, finalize_ingest, ingest, ingest_partition, plan_ingest
from stages.corpus.ingest_dedup import Held, bucket_of, generation_bounds, part_chains
from store import storage
from store.sources import split_member

CFG = IngestConfig(workers=1, chunk_size=2, partition_files=4, min_side=1, dedup_buckets=4)


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (i % 251, (i * 7) % 253, (i * 13) % 255)).save(buf, format="PNG")
    return buf.getvalue()


def _corpus(path: Path) -> Path:
    """12 distinct images; copies within one chunk (b01 of b00), in another partition (z00 of b03), and in a
    tar (a member copying b05, and a member name written twice with different images)."""
    path.mkdir(parents=True)
    for i in range(12):
        (path / f"b{i:02d}.png").write_bytes(_png(i))
    (path / "b01.png").write_bytes(_png(0))
    (path / "z00.png").write_bytes(_png(3))
    (path / "m00.png").write_bytes(b"not an image")
    with tarfile.open(path / "t.tar", "w") as tar:
        for name, data in (("x.png", _png(40)), ("c.png", _png(5)), ("x.png", _png(41)), ("y.png", _png(40))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return path


def _reference(root: str) -> tuple[list[dict], list[dict], list[str]]:
    """The catalog as the merge that holds every kept id made it: a generation's partitions concatenated,
    stably sorted by URI, the first copy of an id kept."""
    plan, lay = _plan(root), RunLayout(root)
    first: dict[str, str] = {}
    kept, dups, digests = [], [], []
    digest = hashlib.sha256()
    for lo, hi in generation_bounds(plan):
        t = pa.concat_tables([storage.read_parquet(lay.ingest_part(k, "images")).replace_schema_metadata(None)
                              for k in range(lo, hi)]).sort_by("uri")
        ids = []
        for row in t.to_pylist():
            if row["id"] in first:
                dups.append({"uri": row["uri"], "id": row["id"], "duplicate_of": first[row["id"]]})
            else:
                first[row["id"]] = row["uri"]
                kept.append(row)
                ids.append(row["id"])
        digest.update("\n".join(ids).encode())
        digests.append(digest.hexdigest()[:16])
    return kept, dups, digests


def _name(uri: str) -> str:
    return (split_member(uri) or (None, Path(uri).name))[1]


def _catalog(root: str) -> tuple[list[dict], list[dict], list[str]]:
    cat = CatalogFiles(RunLayout(root).catalog)
    marker = storage.read_marker(cat.uri)
    return (storage.read_parquet(cat.images).to_pylist(), storage.read_parquet(cat.duplicates).to_pylist(),
            [g["ids"] for g in marker["generations"]])


def test_bucket_is_the_range_of_the_hash():
    ids = pa.array(["0" * 64, "3fffffff" + "f" * 56, "40000000" + "0" * 56, "bfffffff" + "0" * 56, "f" * 64])
    assert bucket_of(ids, 4).to_pylist() == [0, 0, 1, 2, 3]
    assert bucket_of(ids, 1).to_pylist() == [0] * 5


def test_duplicates_within_and_across_chunks_partitions_and_a_tar_match_the_whole_merge(tmp_path):
    src = _corpus(tmp_path / "src")
    root = str(tmp_path / "root")
    rep = ingest(str(src), root, CFG)
    assert rep.reconciles and rep.seen == 18 and rep.quarantined_total == 1
    kept, dups, digests = _catalog(root)
    assert (kept, dups, digests) == _reference(root)
    of = {_name(d["uri"]): _name(d["duplicate_of"]) for d in dups}
    assert of == {"b01.png": "b00.png", "z00.png": "b03.png", "c.png": "b05.png", "y.png": "x.png"}
    assert [_name(r["uri"]) for r in kept].count("x.png") == 2  # a name written twice in a tar: both kept
    assert rep.accepted == 13 and rep.duplicates == 4
    # every unit's table holds only ids of its own hash range
    cat = CatalogFiles(RunLayout(root).catalog)
    held = [(b, r["id"]) for b in range(4) if storage.exists(cat.dedup(0, b))
            for r in storage.read_parquet(cat.dedup(0, b)).to_pylist()]
    assert len(held) == 17 and all(int(i[:8], 16) * 4 >> 32 == b for b, i in held)


def test_one_bucket_and_many_give_the_same_catalog(tmp_path):
    src = _corpus(tmp_path / "src")
    ingest(str(src), str(tmp_path / "one"), CFG.model_copy(update={"dedup_buckets": 1}))
    ingest(str(src), str(tmp_path / "many"), CFG.model_copy(update={"dedup_buckets": 64, "partition_files": 100}))
    assert _catalog(str(tmp_path / "one")) == _catalog(str(tmp_path / "many"))


def test_a_copy_of_an_earlier_generations_image_is_a_duplicate_and_a_rerun_does_nothing(tmp_path):
    src = _corpus(tmp_path / "src")
    root = str(tmp_path / "root")
    first = ingest(str(src), root, CFG)
    before, _, _ = _catalog(root)
    shutil.copy(src / "b07.png", src / "a07.png")  # sorts first by URI, yet the earlier generation's copy wins
    (src / "b99.png").write_bytes(_png(99))
    second = ingest(str(src), root, CFG)
    kept, dups, digests = _catalog(root)
    assert (kept, dups, digests) == _reference(root)
    assert kept[: len(before)] == before and [Path(r["uri"]).name for r in kept[len(before):]] == ["b99.png"]
    assert {"uri": str(src / "a07.png"), "id": hashlib.sha256(_png(7)).hexdigest(),
            "duplicate_of": str(src / "b07.png")} in dups
    assert second.reconciles and (second.seen, second.accepted, second.duplicates) == (
        first.seen + 2, first.accepted + 1, first.duplicates + 1)
    files = {p: p.stat().st_mtime_ns for p in Path(root).rglob("*")}
    assert ingest(str(src), root, CFG).skipped_existing
    assert {p: p.stat().st_mtime_ns for p in Path(root).rglob("*")} == files


def test_units_in_worker_processes_give_the_same_catalog(tmp_path, monkeypatch):
    src = _corpus(tmp_path / "src")
    ingest(str(src), str(tmp_path / "one"), CFG)
    monkeypatch.setattr(ingest_dedup, "POOL_MIN_IDS", 0)
    ingest(str(src), str(tmp_path / "two"), CFG.model_copy(update={"workers": 2}))
    assert _catalog(str(tmp_path / "one")) == _catalog(str(tmp_path / "two"))


@pytest.mark.slow
def test_units_as_ray_tasks_give_the_same_catalog_and_run_in_ray_workers(tmp_path, monkeypatch):
    from runtime.ray_pool import ensure_ray, stop_ray

    src = _corpus(tmp_path / "src")
    ingest(str(src), str(tmp_path / "one"), CFG)
    monkeypatch.setattr(ingest_dedup, "POOL_MIN_IDS", 0)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    pids = []
    real = ingest_dedup.dedup_bucket
    monkeypatch.setattr(ingest_dedup, "dedup_bucket", lambda *a: (pids.append(os.getpid()), real(*a))[1])
    started = ensure_ray()
    try:
        ingest(str(src), str(tmp_path / "two"), CFG)
    finally:
        if started:
            stop_ray()
    assert _catalog(str(tmp_path / "one")) == _catalog(str(tmp_path / "two"))
    assert pids == []  # no unit ran in this process (each would have recorded it here): they ran as Ray tasks


def test_a_unit_done_is_not_run_again(tmp_path):
    src = _corpus(tmp_path / "src")
    root = str(tmp_path / "root")
    n = plan_ingest(str(src), root, CFG)
    for k in range(n):
        ingest_partition(root, k, CFG)
    plan = _plan(root)
    assert sum(max(0, ingest_dedup.dedup_bucket(root, plan, 0, b)) for b in range(4)) == 17
    assert all(ingest_dedup.dedup_bucket(root, plan, 0, b) in (-1, 0) for b in range(4))
    assert ingest_dedup.run_units(root, plan, 0, 1) == 4 - len(list((Path(root) / "catalog" / "dedup").iterdir()))


def test_finalize_holds_a_row_group_per_stream_and_never_reads_a_whole_table(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"i{i:03d}.png").write_bytes(_png(i % 50))  # 10 duplicates
    root = str(tmp_path / "root")
    cfg = CFG.model_copy(update={"dedup_buckets": 2, "partition_files": 8})
    monkeypatch.setattr(ingest_dedup, "PART_ROW_GROUP", 2)
    monkeypatch.setattr(ingest_dedup, "DEDUP_HELD_ROWS", 4)  # 2 rows a row group in each of 2 buckets
    n = plan_ingest(str(src), root, cfg)
    for k in range(n):
        ingest_partition(root, k, cfg)
    lay = RunLayout(root)
    assert n == 8 and len(part_chains([(k, lay.ingest_part(k, "images")) for k in range(n)])) == 1
    whole = storage.read_parquet

    def bucket_only(uri):  # a dedup unit reads earlier buckets whole; nothing else is read whole
        assert CatalogFiles.DEDUP.fullmatch(uri.rsplit("/", 1)[-1]), uri
        return whole(uri)

    monkeypatch.setattr(storage, "read_parquet", bucket_only)
    held = Held()
    rep = finalize_ingest(root, n, held=held)
    assert rep.reconciles and (rep.accepted, rep.duplicates) == (50, 10)
    assert 0 < held.max_rows <= 2 * 2  # one stream of partitions or one per bucket, 2 rows each
    monkeypatch.setattr(storage, "read_parquet", whole)
    assert _catalog(root) == _reference(root)


def test_a_dedup_result_naming_no_row_fails_loudly(tmp_path):
    src = _corpus(tmp_path / "src")
    root = str(tmp_path / "root")
    n = plan_ingest(str(src), root, CFG)
    for k in range(n):
        ingest_partition(root, k, CFG)
    plan = _plan(root)
    for b in range(4):
        ingest_dedup.dedup_bucket(root, plan, 0, b)
    cat = CatalogFiles(RunLayout(root).catalog)
    b = next(b for b in range(4) if storage.exists(cat.dedup(0, b)))
    t = storage.read_parquet(cat.dedup(0, b))
    bad = t.set_column(2, "duplicate_of", pa.array(["x"] * t.num_rows, pa.string())).set_column(
        4, "_r", pa.array([10**6 + i for i in range(t.num_rows)], pa.int64()))
    os.remove(cat.dedup(0, b))
    storage.atomic_write_parquet(cat.dedup(0, b), bad.sort_by(ingest_dedup.KEY))
    with pytest.raises(RuntimeError, match="name"):
        finalize_ingest(root, n)


def test_partitions_decoded_before_hashes_existed_are_sorted_and_hashed_not_decoded_again(tmp_path, monkeypatch):
    src = _corpus(tmp_path / "src")
    root = str(tmp_path / "root")
    ingest(str(src), root, CFG)
    lay = RunLayout(root)
    n = len(_plan(root)["partitions"])
    for k in range(n):  # as an earlier version left them: unsorted, no hashes, no dedup tables
        os.remove(lay.ingest_part(k, "hashes"))
        t = storage.read_parquet(lay.ingest_part(k, "images"))
        storage.atomic_write_parquet(lay.ingest_part(k, "images"), t.take(list(range(t.num_rows))[::-1]))
    shutil.rmtree(CatalogFiles(lay.catalog).dedup_dir)
    want = _reference(root)  # the merge of these partitions, ties in the order they were written
    monkeypatch.setattr("stages.corpus.ingest.run_chunks", lambda *a: pytest.fail("decoded again"))
    assert sum(ingest_partition(root, k, CFG) for k in range(n)) == 18
    finalize_ingest(root, n)
    assert _catalog(root) == want and [_name(r["uri"]) for r in want[0]].count("x.png") == 2
