"""A training run reads the version of each shard set it was named after: a local set is pinned by hard links
(a copy where links fail), a remote one by each object's size and ETag, checked when the object is opened."""

import os
from pathlib import Path

import numpy as np
import pytest

from schemas.config import ShardConfig, TrainConfig
from store import storage
from store.shards import manifest_digest, read_manifest, write_shard_set
from tests.conftest import make_sample
from trainer.data import ShardSet, iter_examples

PHASE2 = TrainConfig(phase=2, max_tokens=24)


def write_set(uri: str, name: str, n: int = 6, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    write_shard_set([make_sample(i, rng, key=f"{name}-{i}") for i in range(n)], uri, ShardConfig(maxcount=2))
    return uri


def rewrite_set(uri: str, name: str, n: int = 6) -> None:
    """What a mining re-run does to a set whose input changed: its stage removes the marker, then the writer
    replaces the shards (each tar written under a temporary name and renamed over the old one)."""
    fs, path = storage.fs_path(storage.join(uri, storage.MARKER))
    fs.rm(path)
    rng = np.random.default_rng(99)
    write_shard_set([make_sample(i, rng, key=f"{name}-{i}") for i in range(n)], uri, ShardConfig(maxcount=2),
                    extend=True)


def plain_set(uri: str) -> ShardSet:
    """The set as the trainer read it before pinning: its live shard URLs."""
    rows = read_manifest(uri)
    return ShardSet(tuple(storage.join(uri, r.shard) for r in rows), tuple(r.samples for r in rows))


def test_the_writer_replaces_tars_by_rename_never_in_place(tmp_path):
    """What a hard-linked snapshot relies on: a rewrite gives each tar a new inode, the old one keeps its bytes."""
    uri = write_set(str(tmp_path / "set"), "a")
    (tmp_path / "held").mkdir()
    old = {}
    for p in Path(uri).glob("*.tar"):
        os.link(p, tmp_path / "held" / p.name)
        old[p.name] = p.read_bytes()
    rewrite_set(uri, "b")
    for name, data in old.items():
        assert (tmp_path / "held" / name).read_bytes() == data != (Path(uri) / name).read_bytes()
        assert os.stat(tmp_path / "held" / name).st_ino != os.stat(Path(uri) / name).st_ino


def test_a_pinned_local_set_yields_its_old_samples_while_the_set_is_rewritten(tmp_path):
    from flows.snapshot import pin_shard_set

    uri = write_set(str(tmp_path / "set"), "a")
    digest = manifest_digest(uri)
    pinned, record = pin_shard_set(uri, digest, str(tmp_path / "run" / "data"))
    assert record == {"uri": uri, "manifest": digest, "snapshot": str(tmp_path / "run" / "data" / digest[:16]),
                      "copied": 0}
    for url in pinned.urls:  # hard links: no byte copied
        assert os.stat(url).st_ino == os.stat(storage.join(uri, Path(url).name)).st_ino
    new, old = iter_examples([pinned], PHASE2), iter_examples([plain_set(uri)], PHASE2)
    first_new, first_old = [next(new).key for _ in range(3)], [next(old).key for _ in range(3)]
    rewrite_set(uri, "b")
    assert first_new + [next(new).key for _ in range(3)] == [f"a-{i}" for i in range(6)]
    mixed = first_old + [next(old).key for _ in range(3)]  # the unpinned reader: old shards, then new ones
    assert mixed[:3] == ["a-0", "a-1", "a-2"] and any(k.startswith("b-") for k in mixed)


def test_pinning_copies_where_links_fail_and_refuses_a_set_of_another_version(tmp_path, monkeypatch):
    from flows.snapshot import ShardSetChanged, pin_shard_set

    uri = write_set(str(tmp_path / "set"), "a")
    digest = manifest_digest(uri)

    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    pinned, record = pin_shard_set(uri, digest, str(tmp_path / "run" / "data"))
    assert record["copied"] == 3
    for url in pinned.urls:
        src = storage.join(uri, Path(url).name)
        assert os.stat(url).st_ino != os.stat(src).st_ino and Path(url).read_bytes() == Path(src).read_bytes()
    assert [next(iter_examples([pinned], PHASE2)).key] == ["a-0"]
    rewrite_set(uri, "b")
    with pytest.raises(ShardSetChanged) as e:
        pin_shard_set(uri, digest, str(tmp_path / "run2" / "data"))
    assert str(e.value).count("\n") == 0 and uri in str(e.value) and digest[:12] in str(e.value)
    assert not (tmp_path / "run2").exists()  # refused before anything was linked


def test_a_set_rewritten_while_it_is_pinned_is_refused(tmp_path, monkeypatch):
    from flows import snapshot

    uri = write_set(str(tmp_path / "set"), "a")
    digest = manifest_digest(uri)
    real = snapshot._place
    calls = []

    def place_then_rewrite(src, dst):  # the miner replaces the set after the first tar was linked
        copied = real(src, dst)
        calls.append(src)
        if len(calls) == 1:
            rewrite_set(uri, "b")
        return copied

    monkeypatch.setattr(snapshot, "_place", place_then_rewrite)
    with pytest.raises(snapshot.ShardSetChanged, match="changed while the run pinned it"):
        snapshot.pin_shard_set(uri, digest, str(tmp_path / "run" / "data"))
    assert not (tmp_path / "run" / "data" / digest[:16]).exists()  # its links removed, the set untouched
    assert sorted(p.name for p in Path(uri).glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar",
                                                              "shard-000002.tar"]


from tests.integration.test_s3 import s3  # noqa: E402,F401  (S3 served on loopback by moto)


def test_a_remote_set_is_pinned_by_etag_and_a_replaced_tar_is_refused_by_name(s3):
    from flows.snapshot import ShardSetChanged, pin_shard_set

    uri = write_set("s3://aceforge-test/shards/a", "a")
    digest = manifest_digest(uri)
    pinned, record = pin_shard_set(uri, digest, "unused-for-remote-sets")
    assert pinned.urls == tuple(plain_set(uri).urls) and record["manifest"] == digest
    assert set(record["objects"]) == {Path(u).name for u in pinned.urls}
    assert all(v["etag"] and v["size"] > 0 for v in record["objects"].values())
    new, old = iter_examples([pinned], PHASE2), iter_examples([plain_set(uri)], PHASE2)
    assert [next(new).key for _ in range(3)] == [next(old).key for _ in range(3)] == ["a-0", "a-1", "a-2"]
    rewrite_set(uri, "b")
    s3.invalidate_cache()
    assert any(next(old).key.startswith("b-") for _ in range(3))  # unpinned: the new set's samples, mixed in
    with pytest.raises(ShardSetChanged) as e:
        [next(new) for _ in range(3)]
    msg = str(e.value)
    assert msg.count("\n") == 0 and "s3://aceforge-test/shards/a/shard-00000" in msg and "ETag" in msg
