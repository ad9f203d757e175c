from pathlib import Path

import pytest

from schemas.config import ShardConfig
from store.shard_reader import ReadStats, ShardReadError, read_shard_set
from store.shards import shard_uris, write_shard_set


def test_truncated_and_tampered_shards_are_reported(samples, tmp_path):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=5))
    first = Path(shard_uris(uri)[0])
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardReadError, match="damaged after sample"):
        list(read_shard_set(uri))
    stats = ReadStats()
    got = list(read_shard_set(uri, on_error="skip", stats=stats))
    assert len(stats.bad_shards) == 1 and samples[5:] == got[-5:]
    with pytest.raises(ShardReadError, match="does not match the manifest"):
        list(read_shard_set(uri, verify=True))
