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
