import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.classifier import train_from_labels
from mining.pairs.classifier import PairClassifier
from schemas.config import MiningConfig, RunConfig
from stages.corpus.embed import load_embeddings


def test_trains_on_the_runs_embeddings_and_checks_its_labels(embedded, tmp_path):
    root, emb_uri = embedded
    ids, _, _ = load_embeddings(emb_uri)
    cfg = RunConfig(root=root, models_dir=str(tmp_path), mining=MiningConfig(embedder="offline"))
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"source_id": ids[:6], "target_id": ids[1:7], "label": [1, 0, 1, 0, 1, 0]}), labels)
    out = tmp_path / "pair_classifier" / "g.safetensors"
    rep = train_from_labels(cfg, labels, out, epochs=20)
    assert rep["pairs"] == 6 and rep["positives"] == 3 and rep["embedder"] == "offline-dct-hist"
    clf = PairClassifier(out)
    clf.setup()
    assert clf.embedder == "offline-dct-hist"
    pq.write_table(pa.table({"source_id": ids[:1], "label": [1]}), labels)
    with pytest.raises(ValueError, match="needs columns"):
        train_from_labels(cfg, labels, out)
