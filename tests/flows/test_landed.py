"""The `aceforge.shards.landed` event, which triggers deployed training, never carries an empty shard set."""

from flows.pipelines import landed_event


def _set(name: str, samples: int, landed_now: bool = True) -> dict:
    uri = f"/r/shards/{name}"
    return {"name": name, "uri": uri, "manifest": f"{uri}/manifest.parquet", "samples": samples,
            "shards": 1 if samples else 0, "counts_by_task": {"t": samples} if samples else {},
            "landed_now": landed_now}


def test_an_empty_set_lands_nothing():
    assert landed_event("/r", [_set("mined-general_editing", 0)], "aceforge.shards.mined") is None


def test_empty_sets_are_left_out_of_the_event():
    event = landed_event("/r", [_set("mined-a", 12), _set("mined-b", 0)], "aceforge.shards.mined")
    assert event is not None
    p = event["payload"]
    assert p["shard_uris"] == ["/r/shards/mined-a"] and [s["name"] for s in p["sets"]] == ["mined-a"]
    assert p["landed_now"] == ["mined-a"] and p["samples"] == 12
    assert event["resource"]["prefect.resource.name"] == "mined-a"


def test_only_an_empty_set_landing_now_triggers_nothing():
    sets = [_set("mined-a", 12, landed_now=False), _set("mined-b", 0)]  # a kept set and a new empty one
    assert landed_event("/r", sets, "aceforge.shards.mined") is None
