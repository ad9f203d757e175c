import io
import os
import tarfile

import pytest

from schemas.io import TMP_TAG, ShardReadError, atomic_write_bytes, iter_tar_samples, join


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_members_group_by_key_up_to_the_first_dot(tmp_path):
    shard = tmp_path / "s.tar"
    _tar(shard, [("a/k1.json", b"{}"), ("a/k1.in0.mask.png", b"m"), ("a/k1.target.jpg", b"t"), ("a/k2.json", b"[]")])
    out = list(iter_tar_samples(str(shard)))
    assert [s["__key__"] for s in out] == ["a/k1", "a/k2"]
    assert out[0]["in0.mask.png"] == b"m" and out[0]["target.jpg"] == b"t" and out[1]["json"] == b"[]"


def test_a_truncated_tar_is_an_error_naming_the_shard(tmp_path):
    shard = tmp_path / "s.tar"
    _tar(shard, [("k1.json", b"x" * 600), ("k2.json", b"y" * 5000)])
    shard.write_bytes(shard.read_bytes()[:2048])
    with pytest.raises(ShardReadError, match=r"s\.tar is damaged after sample"):
        list(iter_tar_samples(str(shard)))


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    uri = join(str(tmp_path), "deep", "f.bin")
    atomic_write_bytes(uri, b"abc")
    assert open(uri, "rb").read() == b"abc"
    assert not [n for n in os.listdir(tmp_path / "deep") if TMP_TAG in n]
