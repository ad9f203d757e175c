from flows.demo import run_demo
from schemas.config import RunConfig, ShardConfig
from tasks.instruct import load_instructed
from tasks import storage
from tasks.shard_reader import read_shard_set


def test_demo_families_come_back_as_sets_and_only_known_pairs_are_packed(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"), shards=ShardConfig(maxcount=16))
    res = run_demo(tmp_path, cfg)
    assert res.recovery.families == 13 and res.recovery.impure_sets == 0
    assert res.recovery.recovered >= 10  # the offline embedder's figure; SigLIP is the real thing
    rep = res.mining.mined["general_editing"]
    counts = res.mining.instructions["general_editing"]
    assert counts["with_instruction"] + counts.get("without_instruction", 0) == rep.pairs
    shards = res.mining.shards["general_editing"]
    samples = list(read_shard_set(shards.uri))
    assert len(samples) == counts["with_instruction"] == shards.samples > 0
    for s in samples:
        gens = [g.name for g in s.lineage.generators]
        assert gens[0] == "offline-dct-hist" and gens[-1] == "known-transform" and "{image}" in s.instruction
    unpacked = [p for p in load_instructed(storage.join(rep.uri, "instructed")) if not p.instruction]
    assert len(unpacked) == counts.get("without_instruction", 0)
