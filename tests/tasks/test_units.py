import pytest

from mining.instructions import ChatInstructionWriter, KnownTransformWriter
from tasks.ingest import ingest
from tasks.units import demo_known_writer, make_writer


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
