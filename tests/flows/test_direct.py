from flows.direct import run_mining
from schemas.config import RunConfig
from tasks.ingest import ingest
from tasks.shard_reader import read_shard_set
from tasks.units import demo_known_writer


def test_direct_run_packs_exactly_the_instructed_pairs(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    cfg = RunConfig(root=str(tmp_path / "root"))
    ingest(str(corpus), cfg.root, cfg.ingest)
    res = run_mining(cfg, writer=demo_known_writer(str(corpus), cfg.root))
    counts = res.instructions["general_editing"]
    shards = res.shards["general_editing"]
    assert res.embedder == "offline-dct-hist" and shards.samples == counts["with_instruction"] > 0
    assert len(list(read_shard_set(shards.uri))) == shards.samples
    assert counts["with_instruction"] + counts["without_instruction"] == res.mined["general_editing"].pairs
    again = run_mining(cfg)  # every stage complete: read back from the markers, nothing recomputed
    assert again.mined["general_editing"].pairs == res.mined["general_editing"].pairs and not again.shards
