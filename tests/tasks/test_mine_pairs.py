import numpy as np
import pytest

from mining.band import BandEdges, disjoint_sets
from mining.embedders import OfflineEmbedder
from mining.pair_classifier import PairClassifier, save_pair_classifier, train_pair_classifier
from mining.presets import preset
from schemas.config import MiningConfig
from schemas.records import Generator
from tasks import storage
from tasks.cluster import cluster_embeddings, load_assignments
from tasks.embed import load_embeddings
from tasks.mine_pairs import load_pairs, mine_pairs




def _run(root, emb_uri, cfg, classifier=None, name="general_editing"):
    ids, x, marker = load_embeddings(emb_uri)
    cl = cluster_embeddings(ids, x, root, emb_uri, cfg)
    return mine_pairs(ids, x, load_assignments(cl), root, preset(name), cfg,
                      Generator(name=marker["embedder"], version=marker["version"]), tuple(marker["band"]),
                      classifier or PairClassifier(None))



def test_pairs_are_in_band_deterministic_and_record_their_lineage(embedded, tmp_path):
    root, emb_uri = embedded
    rep = _run(root, emb_uri, MiningConfig(k=2))
    pairs = load_pairs(rep.uri)
    lo, hi = OfflineEmbedder.band
    assert rep.pairs == len(pairs) > 0 and rep.sets >= 10
    ids, x, _ = load_embeddings(emb_uri)
    row = {i: k for k, i in enumerate(ids)}
    for p in pairs:
        s = float(x[row[p.source_id]] @ x[row[p.target_id]])
        assert lo - 1e-4 <= s <= hi + 1e-4 and abs(s - p.similarity) < 1e-4
        assert [g.name for g in p.lineage.generators] == ["offline-dct-hist", "band-union-find", "pair-classifier:none"]
        assert "classifier" not in p.scores  # no classifier ran: no score
    other_root = str(tmp_path / "again")
    storage.fs_path(other_root)[0].makedirs(other_root, exist_ok=True)
    again = load_pairs(_run(other_root, emb_uri, MiningConfig(k=2)).uri)
    assert again == pairs


def test_stored_edges_retune_without_recomputing(embedded, tmp_path):
    root, emb_uri = embedded
    wide = _run(str(tmp_path / "wide"), emb_uri, MiningConfig(k=1, band_lo=0.80, band_hi=0.99))
    edges = storage.read_parquet(storage.join(wide.uri, "edges.parquet")).to_pylist()
    narrow_cfg = MiningConfig(k=1, band_lo=0.85, band_hi=0.97)
    narrow = _run(str(tmp_path / "narrow"), emb_uri, narrow_cfg)
    ids, _, _ = load_embeddings(emb_uri)
    row = {i: k for k, i in enumerate(ids)}
    kept = [e for e in edges if 0.85 <= e["score"] <= 0.97]
    retuned = disjoint_sets(len(ids), BandEdges(np.array([row[e["source_id"]] for e in kept], np.int64),
                                                np.array([row[e["target_id"]] for e in kept], np.int64),
                                                np.array([e["score"] for e in kept], np.float32), 0))
    sets = storage.read_parquet(storage.join(narrow.uri, "sets.parquet")).to_pylist()
    by_set = {}
    for r in sets:
        by_set.setdefault(r["set_id"], set()).add(r["id"])
    assert {frozenset(ids[k] for k in s) for s in retuned} == {frozenset(s) for s in by_set.values()}


def test_classifier_scores_and_drops_are_recorded(embedded, tmp_path):
    root, emb_uri = embedded
    ids, x, _ = load_embeddings(emb_uri)
    rng = np.random.default_rng(0)
    a = rng.integers(0, len(ids), 200)
    b = rng.integers(0, len(ids), 200)
    y = (np.einsum("nd,nd->n", x[a], x[b]) > 0.9).astype(np.int64)  # a stand-in labelling
    head, _ = train_pair_classifier(x[a], x[b], y, epochs=50)
    path = tmp_path / "m" / "cls.safetensors"
    save_pair_classifier(head, path, "offline-dct-hist")
    rep = _run(str(tmp_path / "r"), emb_uri, MiningConfig(k=1), classifier=PairClassifier(path))
    pairs = load_pairs(rep.uri)
    assert all(0.9 <= p.scores["classifier"] <= 1.0 for p in pairs)
    assert rep.drops["classifier"] + rep.pairs > 0
    save_pair_classifier(head, path, "siglip:ViT-B-16-SigLIP")
    with pytest.raises(ValueError, match="trained on siglip"):
        _run(str(tmp_path / "r2"), emb_uri, MiningConfig(k=1), classifier=PairClassifier(path))


def test_presets_on_other_features_are_refused(embedded, tmp_path):
    root, emb_uri = embedded
    with pytest.raises(ValueError, match="defined on face features"):
        _run(str(tmp_path / "f"), emb_uri, MiningConfig(k=1), name="facial_misaligned")


def test_series_groups_are_written(embedded, tmp_path):
    root, emb_uri = embedded
    rep = _run(str(tmp_path / "s"), emb_uri, MiningConfig(k=1), name="series_generation")
    groups = storage.read_parquet(storage.join(rep.uri, "groups.parquet")).to_pylist()
    assert rep.groups == len(groups) > 0
    assert all(3 <= len(g["input_ids"]) <= 8 and g["target_id"] not in g["input_ids"] for g in groups)


def test_batches_of_clusters_give_the_same_result_as_one_batch(embedded, tmp_path):
    root, emb_uri = embedded
    one = load_pairs(_run(str(tmp_path / "one"), emb_uri, MiningConfig(k=3, clusters_per_batch=100)).uri)
    rep = _run(str(tmp_path / "many"), emb_uri, MiningConfig(k=3, clusters_per_batch=1))
    many = load_pairs(rep.uri)
    assert rep.clusters == 3 and storage.read_marker(rep.uri)["batches"] == 3
    assert sorted(p.pair_id for p in one) == sorted(p.pair_id for p in many) and len(one) > 0
