"""bench/growth_vectors.py writes a catalog and embeddings that the stages after embed accept as their own."""
import numpy as np

from bench.growth_vectors import FAMILY, synthetic_vectors, write_corpus
from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from stages.corpus.cluster import cluster_stages
from stages.corpus.demo_corpus import generate_variants
from stages.corpus.ingest import catalog_size
from stages.pairs.mine import MineStage


def test_family_members_fall_in_the_band_and_the_rest_do_not():
    x = synthetic_vectors(400, 768, seed=0, family_share=0.5)
    sims = x @ x.T
    fam = sims[:4, :4][~np.eye(FAMILY, dtype=bool)]
    assert 0.85 <= fam.min() and fam.max() <= 0.98  # SigLIP's band
    assert sims[200:, 200:][~np.eye(200, dtype=bool)].max() < 0.85


def test_the_synthetic_corpus_is_clustered_and_mined_by_the_stages(tmp_path):
    pool = generate_variants(tmp_path / "pool", 4, long_side=(96, 128))
    root = str(tmp_path / "root")
    write_corpus(root, 800, pool, partition=256, family_share=0.5)
    cfg = RunConfig(root=root, mining={"embedder": "siglip", "partition_size": 256, "geometric_check": False})
    assert catalog_size(root) == 800
    km = [LocalExecutor().run(st) for st in cluster_stages(cfg)][-1]
    assert km.counts["points"] == 800
    mined = LocalExecutor().run(MineStage(cfg, preset="general_editing"))
    assert mined.counts["pairs"] > 0
