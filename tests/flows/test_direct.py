from flows.direct import run_mining
from schemas.config import RunConfig
from store.shard_reader import read_shard_set


def test_direct_run_packs_exactly_the_instructed_pairs(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    cfg = RunConfig(root=str(tmp_path / "root"))
    res = run_mining(cfg, source=str(corpus), writer={"kind": "demo", "corpus": str(corpus)})
    counts = res["general_editing"]["instructions"]
    shards = res["general_editing"]["shards"]
    assert res["embeddings"]["embedder"] == "offline-dct-hist" and shards["samples"] == counts["with_instruction"] > 0
    assert shards["landed_now"] and len(list(read_shard_set(shards["uri"]))) == shards["samples"]
    assert counts["with_instruction"] + counts["without_instruction"] == res["general_editing"]["mined"]["pairs"]
    markers = {p: p.stat().st_mtime_ns for p in (tmp_path / "root").rglob("_SUCCESS.json")}
    again = run_mining(cfg, source=str(corpus), writer={"kind": "demo", "corpus": str(corpus)})
    assert again["general_editing"]["mined"] == res["general_editing"]["mined"]  # read back from the markers
    assert not again["general_editing"]["shards"]["landed_now"]
    assert {p: p.stat().st_mtime_ns for p in markers} == markers  # nothing rewritten
