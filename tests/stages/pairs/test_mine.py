import numpy as np
import pytest

from mining.pairs.band import BandEdges, disjoint_sets
from mining.models.embedders import OfflineEmbedder
from mining.pairs.classifier import PairClassifier, save_pair_classifier, train_pair_classifier
from mining.pairs.presets import preset
from schemas.config import MiningConfig, RunConfig
from schemas.records import Generator
from store import storage
from stages.corpus.cluster import cluster_stages
from stages.corpus.embed import load_embeddings
from runtime.executors import LocalExecutor
from stages.pairs.mine import MineReport, MineStage, load_pairs
from tests.conftest import EMBEDDED_MINING, copy_embedded


def _run(root, emb_uri, cfg: MiningConfig, classifier=None, name="general_editing") -> MineReport:
    """K-means and the mining of preset `name` through the local executor, on a copy at `root` of the embedded
    fixture's root. `classifier`: a pair classifier's file."""
    copy_embedded((emb_uri.rsplit("/embeddings/", 1)[0], emb_uri), root)
    mining = MiningConfig(**{**cfg.model_dump(), **EMBEDDED_MINING,
                             "pair_classifier": classifier.name if classifier else None})
    run_cfg = RunConfig(root=root, mining=mining, **({"models_dir": str(classifier.parent)} if classifier else {}))
    ex = LocalExecutor()
    for stage in cluster_stages(run_cfg):
        ex.run(stage)
    rep = ex.run(MineStage(run_cfg, preset=name))
    return MineReport(rep.outputs[0], **{k: v for k, v in rep.counts.items() if k != "band"})


def test_pairs_are_in_band_deterministic_and_record_their_lineage(embedded, tmp_path):
    _, emb_uri = embedded
    rep = _run(str(tmp_path / "first"), emb_uri, MiningConfig(k=2))
    pairs = load_pairs(rep.uri)
    lo, hi = OfflineEmbedder.band
    assert rep.pairs == len(pairs) > 0 and rep.sets >= 10
    ids, x, _ = load_embeddings(emb_uri)
    row = {i: k for k, i in enumerate(ids)}
    for p in pairs:
        s = float(x[row[p.source_id]] @ x[row[p.target_id]])
        assert lo - 1e-4 <= s <= hi + 1e-4 and abs(s - p.similarity) < 1e-4
        assert [g.name for g in p.lineage.generators] == ["offline-dct-hist", "band-union-find", "pair-classifier:none",
                                                          "keypoint-ransac"]
        assert "classifier" not in p.scores  # no classifier ran: no score
        assert p.scores["geometric_inliers"] >= 8
    again = load_pairs(_run(str(tmp_path / "again"), emb_uri, MiningConfig(k=2)).uri)
    assert again == pairs


def test_stored_edges_retune_without_recomputing(embedded, tmp_path):
    root, emb_uri = embedded
    wide = _run(str(tmp_path / "wide"), emb_uri, MiningConfig(k=1, band_lo=0.80, band_hi=0.99, geometric_check=False))
    edges = storage.read_parquet(storage.join(wide.uri, "edges.parquet")).to_pylist()
    narrow_cfg = MiningConfig(k=1, band_lo=0.85, band_hi=0.97, geometric_check=False)
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
    rep = _run(str(tmp_path / "r"), emb_uri, MiningConfig(k=1, geometric_check=False), classifier=path)
    pairs = load_pairs(rep.uri)
    assert all(0.9 <= p.scores["classifier"] <= 1.0 for p in pairs)
    assert rep.drops["classifier"] + rep.pairs > 0
    save_pair_classifier(head, path, "siglip:ViT-B-16-SigLIP")
    with pytest.raises(ValueError, match="trained on siglip"):
        _run(str(tmp_path / "r2"), emb_uri, MiningConfig(k=1, geometric_check=False), classifier=path)


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
    cfg = dict(k=3, geometric_check=False)
    one = load_pairs(_run(str(tmp_path / "one"), emb_uri, MiningConfig(clusters_per_batch=100, **cfg)).uri)
    rep = _run(str(tmp_path / "many"), emb_uri, MiningConfig(clusters_per_batch=1, **cfg))
    many = load_pairs(rep.uri)
    assert rep.clusters == 3 and storage.read_marker(rep.uri)["batches"] == 3
    assert sorted(p.pair_id for p in one) == sorted(p.pair_id for p in many) and len(one) > 0


def test_photos_the_embedding_cannot_tell_apart_are_split_by_geometry(tmp_path):
    """One union-find set of two photos' views (every cosine in the band): groups hold one photo each, pairs
    across the photos are dropped, and every member and candidate is counted."""
    from mining.pairs.geometric import Verifier
    from schemas.arrow import from_table
    from schemas.records import PairRecord
    from stages.pairs.mine import mine_batch
    from tests.mining.pairs.test_geometric import _arc, _variants

    views = ("base", "crop", "hflip", "color", "rotate")
    images = {f"a-{k}": v for k, v in _variants("astronaut").items() if k in views}
    images |= {f"c-{k}": v for k, v in _variants("coffee", seed=1).items() if k in views}
    ids = sorted(images)
    x = _arc(np.linspace(0, 10, len(ids)), jitter=0.02)
    band, gen, none = (0.5, 0.9999), Generator(name="offline-dct-hist", version="1"), PairClassifier(None)

    def mine(name, geometric=True):
        cfg = MiningConfig(geometric_check=geometric)
        ver = Verifier(images.__getitem__, 8) if geometric else None
        return mine_batch(ids, x, np.zeros(len(ids), np.int64), str(tmp_path / f"{name}-{geometric}"), preset(name),
                          cfg, gen, band, none, verifier=ver)

    rep = mine("series_generation")
    groups = storage.read_parquet(storage.join(rep.uri, "groups.parquet")).to_pylist()
    assert rep.sets == 1 and rep.groups == len(groups) > 0
    for g in groups:
        assert len({i[0] for i in [*g["input_ids"], g["target_id"]]}) == 1, g
    grouped = sum(len(g["input_ids"]) + 1 for g in groups)
    assert grouped + rep.drops["incoherent_group"] + rep.drops["group_leftover"] == len(ids)

    rep = mine("general_editing")
    pairs = from_table(storage.read_parquet(storage.join(rep.uri, "pairs.parquet")), PairRecord)
    assert all(p.source_id[0] == p.target_id[0] for p in pairs)
    assert rep.pairs == 20 and rep.drops["incoherent_pair"] == 25  # 2 x C(5, 2) kept, 5 x 5 across photos
    blind = mine("general_editing", geometric=False)
    assert blind.pairs == 45 and "incoherent_pair" not in blind.drops
    with pytest.raises(ValueError, match="needs verifier"):
        mine_batch(ids, x, np.zeros(len(ids), np.int64), str(tmp_path / "x"), preset("general_editing"),
                   MiningConfig(), gen, band, none)
