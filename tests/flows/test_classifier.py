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


def _mine(root: str, models: str, preset: str = "general_editing"):
    from runtime.executors import LocalExecutor
    from stages.corpus.cluster import cluster_stages
    from stages.pairs.mine import MineStage, load_pairs
    from tests.conftest import EMBEDDED_MINING

    # a wide band lets unrelated images through: the second-level check's work
    cfg = RunConfig(root=root, models_dir=models, mining=MiningConfig(**EMBEDDED_MINING, k=1, band_lo=0.7,
                                                                      band_hi=0.99, geometric_check=False))
    ex = LocalExecutor()
    for stage in cluster_stages(cfg):
        ex.run(stage)
    rep = ex.run(MineStage(cfg, preset=preset))
    return cfg, rep, load_pairs(rep.outputs[0])


@pytest.mark.slow
def test_labels_of_a_planted_set_train_a_classifier_that_drops_the_unrelated_pairs(embedded, demo_corpus, tmp_path):
    from flows.labels import append_labels, load_items
    from stages.corpus.ingest import load_catalog
    from tests.conftest import copy_embedded

    _, gt = demo_corpus
    root = copy_embedded(embedded, str(tmp_path / "root"))
    family = {m["file"]: f for f, ms in gt["families"].items() for m in ms}
    of = {r.id: family.get(r.uri.split("/corpus/", 1)[1]) for r in load_catalog(root)}

    def related(p) -> bool:
        return of[p.source_id] is not None and of[p.source_id] == of[p.target_id]

    models = str(tmp_path / "models")
    cfg, first, pairs = _mine(root, models)
    unrelated = [p for p in pairs if not related(p)]
    assert first.counts["drops"]["classifier"] == 0 and len(unrelated) >= 20 and len(pairs) - len(unrelated) >= 100
    # a person labels every mined pair (as the page appends them): same family = accept, else reject
    _, items = load_items(cfg.root + "/pairs/general_editing")
    append_labels(root, "general_editing", [
        {"pair_id": it.pair_id, "source_id": it.source_id, "target_id": it.target_id, "who": "planted",
         "verdict": "accept" if of[it.source_id] and of[it.source_id] == of[it.target_id] else "reject"}
        for it in items])
    rep = train_from_labels(cfg, None, task="general_editing", epochs=200)
    print(f"planted set: {rep['pairs']} labelled pairs ({rep['positives']} valid), held out {rep['heldout_pairs']}: "
          f"accuracy {rep['heldout_accuracy']:.3f}, ROC AUC {rep['heldout_roc_auc']:.3f}")
    assert rep["heldout_pairs"] >= 0.2 * rep["pairs"] and rep["heldout_roc_auc"] >= 0.9
    clf = PairClassifier(rep["out"])
    clf.setup()
    assert clf.metadata["task"] == "general_editing" and float(clf.metadata["heldout_roc_auc"]) == \
        pytest.approx(rep["heldout_roc_auc"], abs=1e-4)
    # the labelling page now shows the least certain pairs first
    from flows.classifier import score_pairs
    from flows.labels import order_items

    scores = score_pairs(cfg, "general_editing", [i.source_id for i in items], [i.target_id for i in items])
    queue = order_items(list(items), scores)
    margins = [abs(i.scores["classifier"] - 0.5) for i in queue]
    assert margins == sorted(margins) and len(queue) == len(items)
    assert score_pairs(cfg, "text_editing", [items[0].source_id], [items[0].target_id]) is None  # none trained
    # the next mining run finds the task's head under models_dir and applies Table 4's 0.9-1.0
    _, second, kept = _mine(root, models)
    gone = {p.pair_id for p in unrelated} - {p.pair_id for p in kept}
    print(f"next run: {len(kept)} pairs kept of {len(pairs)}, {len(gone)} of {len(unrelated)} unrelated dropped, "
          f"drops {second.counts['drops']}")
    assert len(gone) >= 0.9 * len(unrelated)
    assert sum(related(p) for p in kept) >= 0.8 * (len(pairs) - len(unrelated))
    assert second.counts["drops"]["classifier"] == len(pairs) - len(kept) > 0
    assert all(0.9 <= p.scores["classifier"] <= 1.0 for p in kept)
    assert [g.name for g in kept[0].lineage.generators][2] == "pair-classifier:general_editing"
    # object editing: the same people's verdicts as object-editing labels, its own head, Table 4's >= 0.5
    append_labels(root, "object_editing", [
        {"pair_id": it.pair_id, "source_id": it.source_id, "target_id": it.target_id, "who": "planted",
         "verdict": "accept" if related(it) else "reject"} for it in items])
    train_from_labels(cfg, None, task="object_editing", epochs=200)
    _, third, objects = _mine(root, models, preset="object_editing")
    assert objects and all(p.scores["classifier"] >= 0.5 and p.task == "object_editing" for p in objects)
    assert third.counts["drops"]["classifier"] == len(pairs) - len(objects) >= 0.9 * len(unrelated)
    assert [g.name for g in objects[0].lineage.generators][2] == "pair-classifier:object_editing"


def test_a_preset_that_needs_a_classifier_refuses_in_one_line_without_one(tmp_path):
    from mining.pairs.presets import preset
    from stages.pairs.mine import classifier_file

    mc = MiningConfig()
    for name in ("object_editing", "text_editing"):
        with pytest.raises(ValueError, match=f"preset {name} needs a trained {name} pair classifier") as e:
            classifier_file(str(tmp_path), mc, preset(name))
        assert "\n" not in str(e.value)
    assert classifier_file(str(tmp_path), mc, preset("reference_generation")) is None  # pass-through allowed
    assert classifier_file(str(tmp_path), mc, preset("object_editing"), strict=False) is None
    (tmp_path / "pair_classifier").mkdir()
    (tmp_path / "pair_classifier" / "object_editing.safetensors").write_bytes(b"x")
    assert classifier_file(str(tmp_path), mc, preset("object_editing")).name == "object_editing.safetensors"
    assert classifier_file(str(tmp_path), mc, preset("text_editing"), strict=False) is None
