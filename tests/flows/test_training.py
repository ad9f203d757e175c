import pytest

from flows.training import train_on_shards
from schemas.config import RunConfig


def test_an_incomplete_shard_set_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a complete shard set"):
        train_on_shards(RunConfig(root=str(tmp_path / "root")), str(tmp_path / "set"))
    assert not (tmp_path / "root").exists()
