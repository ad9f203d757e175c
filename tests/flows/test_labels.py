import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from flows.label_page import LabelSession, make_server
from flows.labels import (LabelItem, append_labels, export_label_studio, import_label_studio, latest_verdicts,
                          order_items, read_labels, training_rows)
from tests.conftest import png, random_image


def _items(n: int) -> list[LabelItem]:
    rng = np.random.default_rng(0)
    return [LabelItem(f"p{k}", f"s{k}", f"t{k}", "general_editing", f"Edit {{image}} number {k}.", {"band_cosine": 0.9},
                      images={"source": png(random_image(rng)), "target": png(random_image(rng))}) for k in range(n)]


def _row(k: int, verdict: str, at: str | None = None) -> dict:
    return {"pair_id": f"p{k}", "source_id": f"s{k}", "target_id": f"t{k}", "verdict": verdict, "who": "ann",
            **({"at": at} if at else {})}


def test_appending_keeps_every_earlier_label_and_the_latest_verdict_counts(tmp_path):
    root = str(tmp_path / "root")
    assert append_labels(root, "general_editing", [_row(0, "accept"), _row(1, "skip")]) == 2
    assert append_labels(root, "general_editing", [_row(0, "reject", at="2999-01-01T00:00:00+00:00"),
                                                   _row(2, "accept")]) == 4
    table = read_labels(root, "general_editing")
    assert table.column("pair_id").to_pylist() == ["p0", "p1", "p0", "p2"]
    assert set(table.column("who").to_pylist()) == {"ann"} and all(table.column("at").to_pylist())
    assert {k: v["verdict"] for k, v in latest_verdicts(table).items()} == {"p0": "reject", "p1": "skip", "p2": "accept"}
    src, tgt, y = training_rows(table)  # skips are not training data
    assert sorted(zip(src, tgt, y.tolist())) == [("s0", "t0", 0), ("s2", "t2", 1)]
    with pytest.raises(ValueError, match="verdict must be one of"):
        append_labels(root, "general_editing", [_row(3, "maybe")])
    with pytest.raises(ValueError, match="unknown task"):
        append_labels(root, "no_such_task", [_row(3, "accept")])
    assert read_labels(root, "general_editing").num_rows == 4  # a refused append leaves the file as it was


def test_least_certain_pairs_come_first_once_scored():
    items = _items(4)
    assert [i.pair_id for i in order_items(list(items), None)] == ["p0", "p1", "p2", "p3"]
    ordered = order_items(list(items), np.array([0.95, 0.45, 0.1, 0.7]))
    assert [i.pair_id for i in ordered] == ["p1", "p3", "p2", "p0"]  # |s - 0.5|: .05, .2, .4, .45
    assert ordered[0].scores["classifier"] == pytest.approx(0.45)


def test_label_studio_export_and_import_round_trip(tmp_path):
    root = str(tmp_path / "root")
    append_labels(root, "general_editing", [_row(1, "reject")])
    path = tmp_path / "ls.json"
    assert export_label_studio(_items(3), read_labels(root, "general_editing"), path) == 3
    tasks = json.loads(path.read_text())
    assert [t["data"]["pair_id"] for t in tasks] == ["p0", "p1", "p2"]
    assert "annotations" not in tasks[0]
    assert tasks[1]["annotations"][0]["result"][0]["value"]["choices"] == ["reject"]
    # someone labels p0 in Label Studio (two annotations: the later one counts) and cancels p2
    tasks[0]["annotations"] = [
        {"completed_by": {"id": 7, "email": "a@x"}, "created_at": "2030-01-01T00:00:00Z",
         "result": [{"type": "choices", "from_name": "verdict", "to_name": "target", "value": {"choices": ["reject"]}}]},
        {"completed_by": {"id": 7, "email": "a@x"}, "created_at": "2030-01-02T00:00:00Z",
         "result": [{"type": "choices", "from_name": "verdict", "to_name": "target", "value": {"choices": ["accept"]}}]}]
    tasks[2]["annotations"] = [{"was_cancelled": True, "created_at": "2030-01-01T00:00:00Z",
                                "result": [{"type": "choices", "value": {"choices": ["accept"]}}]}]
    path.write_text(json.dumps(tasks))
    rows = import_label_studio(path, "general_editing")
    assert [(r["pair_id"], r["verdict"], r["who"]) for r in rows] == \
        [("p0", "accept", "label-studio:a@x"), ("p1", "reject", "label-studio:ann")]
    assert import_label_studio(path, "object_editing") == []  # these are general-editing pairs
    del tasks[0]["data"]["source_id"]
    path.write_text(json.dumps(tasks))
    with pytest.raises(ValueError, match="task 1 has no source_id"):
        import_label_studio(path, "general_editing")


def _call(base: str, path: str, body: dict | None = None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("Content-Type"), r.read()


def test_the_server_serves_pairs_in_order_records_verdicts_and_resumes(tmp_path):
    root = str(tmp_path / "root")
    items = _items(3)
    server = make_server(LabelSession(root, "general_editing", items, "ann", 10_000_000), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert server.server_address[0] == "127.0.0.1"
        mime, page = _call(base, "/")
        assert mime.startswith("text/html") and b"general_editing" in page
        state = json.loads(_call(base, "/api/next")[1])
        assert state["pair"]["pair_id"] == "p0" and state["progress"]["labelled"] == 0
        mime, img = _call(base, "/image/0/target")
        assert mime == "image/png" and img == items[0].images["target"]
        state = json.loads(_call(base, "/api/label", {"pair_id": "p0", "verdict": "accept"})[1])
        assert state["pair"]["pair_id"] == "p1" and state["progress"]["accept"] == 1
        with pytest.raises(urllib.error.HTTPError) as e:
            _call(base, "/api/label", {"pair_id": "p1", "verdict": "perhaps"})
        assert e.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as e:
            _call(base, "/image/9/source")
        assert e.value.code == 404
        # another site open in the same browser cannot label, and a rebound host name is refused
        for headers in ({"Origin": "http://evil.example"}, {"Host": f"evil.example:{server.server_address[1]}"}):
            req = urllib.request.Request(base + "/api/label", data=json.dumps({"pair_id": "p1", "verdict": "reject"})
                                         .encode(), headers={"Content-Type": "text/plain", **headers})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            assert e.value.code == 403
        assert json.loads(_call(base, "/api/next")[1])["progress"]["labelled"] == 1
    finally:
        server.shutdown()
        server.server_close()
    # a new session on the same root starts where the last one stopped
    again = LabelSession(root, "general_editing", items, "ann", 10_000_000)
    assert again.state()["pair"]["pair_id"] == "p1" and again.state()["progress"]["labelled"] == 1
    assert read_labels(root, "general_editing").to_pylist()[0]["verdict"] == "accept"


def test_a_shard_sets_one_input_samples_are_labelled_with_their_own_images(samples, tmp_path):
    from flows.labels import load_items
    from schemas.config import ShardConfig
    from store.shards import write_shard_set

    out = str(tmp_path / "root" / "shards" / "mined-x")
    write_shard_set(iter(samples), out, ShardConfig())
    root, items = load_items(out)
    assert root == str(tmp_path / "root")
    one_input = [s for s in samples if len(s.units) == 1]  # reference samples (two inputs) are not pairs
    assert [i.pair_id for i in items] == [s.key for s in one_input]
    assert items[0].images["source"] == one_input[0].units[0].image
    assert items[0].images["target"] == one_input[0].target.image
    assert (items[0].source_id, items[0].target_id) == tuple(one_input[0].lineage.source_ids)
    with pytest.raises(FileNotFoundError, match="neither a complete pairs"):
        load_items(str(tmp_path / "nothing"))
