import pytest

from mining.instructions.writers import ChatInstructionWriter, KnownTransformWriter, TemplateInstructionWriter
from schemas.config import MiningConfig
from stages.corpus.ingest import load_catalog
from stages.corpus.ingest import ingest
from stages.pairs.instruct import demo_known_writer, instruct_pairs, load_instructed, make_writer, pair_samples
from tests.stages.pairs.test_mine import _run
from stages.pairs.mine import load_pairs


def test_pairs_are_oriented_by_their_instruction_and_only_instructed_ones_become_samples(embedded, tmp_path):
    root, emb_uri = embedded
    rep = _run(str(tmp_path / "r"), emb_uri, MiningConfig(k=1))
    pairs = load_pairs(rep.uri)
    a, b = pairs[0], pairs[1]
    writer = KnownTransformWriter({(a.source_id, a.target_id): "Mirror {image}.",
                                   (b.target_id, b.source_id): "Brighten {image}."})
    catalog = {r.id: r for r in load_catalog(root)}
    uri, counts = instruct_pairs(pairs, writer, catalog, rep.uri)
    assert counts == {"with_instruction": 2, "without_instruction": len(pairs) - 2}
    done = {p.pair_id: p for p in load_instructed(uri)}
    assert (done[a.pair_id].source_id, done[a.pair_id].instruction) == (a.source_id, "Mirror {image}.")
    assert (done[b.pair_id].source_id, done[b.pair_id].target_id) == (b.target_id, b.source_id)  # swapped
    assert done[b.pair_id].lineage.generators[-1].name == "known-transform"
    samples = list(pair_samples(list(done.values()), catalog))
    assert sorted(s.instruction for s in samples) == ["Brighten {image}.", "Mirror {image}."]
    s = next(x for x in samples if x.instruction == "Mirror {image}.")
    assert s.lineage.source_ids == [a.source_id, a.target_id] and s.task == "general_editing"


def test_writers_from_their_specs(demo_corpus, tmp_path):
    corpus, gt = demo_corpus
    root = str(tmp_path / "root")
    ingest(str(corpus / "photos"), root)
    w = make_writer({"kind": "demo", "corpus": str(corpus)}, root)
    assert isinstance(w, KnownTransformWriter)
    assert len(w.known) == sum(len(m) - 1 for m in gt["families"].values())  # every accepted variant
    assert w.known == demo_known_writer(str(corpus), root).known
    chat = make_writer({"kind": "chat", "base_url": "http://127.0.0.1:9/v1", "model": "vlm", "retries": 0}, root)
    assert isinstance(chat, ChatInstructionWriter) and chat.name == "chat:vlm" and chat.retries == 0
    with pytest.raises(ValueError):
        make_writer({"kind": "chat", "bogus": 1}, root)
    assert isinstance(make_writer({"kind": "template"}, root), TemplateInstructionWriter)


def _plant_batches(root: str, sizes: dict[str, int]) -> list[str]:
    """Mined batch folders as the mining stage leaves them, and the preset's marker (naming them)."""
    from schemas.arrow import PAIR_SCHEMA, to_table
    from schemas.layout import PairFiles, RunLayout
    from schemas.records import PairRecord
    from store import storage

    lay = RunLayout(root)
    dirs = []
    for name, per in sizes.items():
        d = storage.join(storage.parent(lay.pair_batch("general_editing", 0)), name)
        recs = [PairRecord(pair_id=f"{name}-{i}", source_id=f"{name}-s{i}", target_id=f"{name}-t{i}",
                           task="general_editing", similarity=0.95) for i in range(per)]
        storage.atomic_write_parquet(PairFiles(d).pairs, to_table(recs, PairRecord).cast(PAIR_SCHEMA))
        storage.write_marker(d, {"counts": {"pairs": per}})
        dirs.append(d)
    storage.write_marker(lay.pairs("general_editing"), {"counts": {"pairs": sum(sizes.values())},
                                                        "batches": list(sizes)})
    return dirs


def test_instructions_run_per_mined_batch_and_only_new_batches_run_again(tmp_path, monkeypatch):
    from pathlib import Path

    from runtime.executors import LocalExecutor
    from schemas.config import RunConfig
    from stages.pairs.instruct import InstructStage, instructed_batches
    from stages.pairs.mine import MineStage

    cfg = RunConfig(root=str(tmp_path / "root"))
    dirs = _plant_batches(cfg.root, {"batch-00000-aaaaaaaa": 3, "batch-00001-bbbbbbbb": 3})
    monkeypatch.setattr(MineStage, "_batches", lambda self: dirs)
    stage = lambda: InstructStage(cfg, preset="general_editing", writer={"kind": "template"})  # noqa: E731
    rep = LocalExecutor().run(stage())
    assert rep.counts["pairs"] == 6 == rep.counts["with_instruction"] + rep.counts.get("without_instruction", 0)
    out = rep.outputs[0]
    assert [d.rsplit("/", 1)[-1] for d in instructed_batches(out)] == ["batch-00000-aaaaaaaa", "batch-00001-bbbbbbbb"]
    kept = Path(out, "batch-00001-bbbbbbbb", "pairs.parquet")
    before = kept.stat().st_mtime_ns
    foreign = Path(out, "notes")
    foreign.mkdir()

    dirs[:] = _plant_batches(cfg.root, {"batch-00001-bbbbbbbb": 3, "batch-00002-cccccccc": 4})  # 1 as it was
    grown = LocalExecutor().run(stage())
    assert grown.execution.ran == 1 and grown.execution.skipped == 1 and kept.stat().st_mtime_ns == before
    assert grown.counts["pairs"] == 3 + 4 and grown.items == 2
    assert not Path(out, "batch-00000-aaaaaaaa").exists() and foreign.is_dir()  # its own old batch only

    other = InstructStage(cfg, preset="general_editing", writer={"kind": "demo", "corpus": "elsewhere"})
    assert not other.item_done(0)  # another writer: instructed again
