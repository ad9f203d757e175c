import pytest

from schemas.config import RunConfig
from stages.corpus.cluster import cluster_stages
from stages.corpus.embed import EmbedStage
from runtime.executors import LocalExecutor
from stages.corpus.ingest import IngestStage
from stages.pairs.instruct import InstructStage
from stages.pairs.mine import MineStage
from stages.pairs.pack import PackStage
from store.shard_reader import read_shard_set


def test_pack_writes_every_instructed_pair_once_and_reports_from_its_marker(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    cfg = RunConfig(root=str(tmp_path / "root"), shards={"maxcount": 10})
    ex = LocalExecutor()
    pack = PackStage(cfg, preset="general_editing", shard_name="packed")
    for stage in (IngestStage(cfg, source=str(corpus)), EmbedStage(cfg), *cluster_stages(cfg),
                  MineStage(cfg, preset="general_editing")):
        ex.run(stage)
    with pytest.raises(FileNotFoundError, match="no complete instructed pairs"):
        pack.run(0)  # nothing instructed yet: a clear error, no shard set
    assert pack.report() is None
    instructed = ex.run(InstructStage(cfg, preset="general_editing", writer={"kind": "demo", "corpus": str(corpus)}))
    rep = ex.run(pack)
    with_instruction = instructed.counts["with_instruction"]
    assert rep.counts["samples"] == with_instruction > 0 and rep.counts["shards"] == -(-with_instruction // 10)
    samples = list(read_shard_set(rep.counts["uri"]))
    assert len(samples) == with_instruction and len({s.key for s in samples}) == with_instruction
    assert all(s.instruction and s.lineage.generators[-1].name == "known-transform" for s in samples)
    assert rep.execution.ran == 1 and rep.execution.counts["samples"] == with_instruction
    assert pack.complete() and pack.report() == rep.model_copy(update={"execution": None})  # from the marker
