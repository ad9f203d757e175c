from pathlib import Path

import numpy as np

from schemas.config import RunConfig
from stages.corpus.embed import EmbedStage, load_embeddings
from runtime.executors import LocalExecutor
from stages.corpus.ingest import load_catalog
from tests.conftest import EMBEDDED_MINING


def test_embeddings_are_partitioned_float16_with_their_embedder(embedded):
    root, emb_uri = embedded
    ids, x, marker = load_embeddings(emb_uri)
    accepted = len(load_catalog(root))  # every accepted image of the demo corpus, embedded
    assert marker["embedder"] == "offline-dct-hist" and marker["partitions"] == 3 and len(ids) == accepted > 100
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-3)
    parts = sorted((p.name, p.stat().st_mtime_ns) for p in Path(emb_uri).iterdir())
    stage = EmbedStage(RunConfig(root=root, mining=EMBEDDED_MINING))
    assert stage.complete()
    again = LocalExecutor().run(stage)  # complete: read back, nothing written
    assert again.outputs == [emb_uri] and again.counts["embedded"] == len(ids)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(emb_uri).iterdir()) == parts


def test_counts_that_do_not_reconcile_stop_the_partition_and_the_marker(tmp_path):
    import numpy as np
    import pytest

    from schemas.layout import EmbeddingFiles
    from stages.corpus.embed import finalize_embeddings, write_partition

    out = str(tmp_path / "emb")
    vecs = np.ones((2, 4), np.float32)
    with pytest.raises(RuntimeError, match="3 catalog rows in, 2 embedded"):
        write_partition(EmbeddingFiles(out).part(0), ["a", "b"], vecs, "e", "1", {}, 3)
    write_partition(EmbeddingFiles(out).part(0), ["a", "b"], vecs, "e", "1", {"corrupt": 1}, 3)
    with pytest.raises(RuntimeError, match="the catalog has 4 images"):
        finalize_embeddings(out, 1, 4, (0.8, 0.9))
    assert not (tmp_path / "emb" / "_SUCCESS.json").exists()
    finalize_embeddings(out, 1, 3, (0.8, 0.9))
    assert (tmp_path / "emb" / "_SUCCESS.json").exists()


def test_a_catalog_ingested_again_with_force_is_embedded_again(tmp_path):
    from schemas.config import RunConfig
    from stages.corpus.demo_corpus import generate_variants
    from stages.corpus.embed import EmbedStage
    from runtime.executors import LocalExecutor
    from stages.corpus.ingest import ingest

    generate_variants(tmp_path / "a", 40)
    generate_variants(tmp_path / "b", 40, seed=1)
    cfg = RunConfig(root=str(tmp_path / "root"), mining={"partition_size": 16, "embedder": "offline"})
    ingest(str(tmp_path / "a"), cfg.root)
    LocalExecutor().run(EmbedStage(cfg))
    ingest(str(tmp_path / "b"), cfg.root, force=True)  # same row count, other images
    rep = LocalExecutor().run(EmbedStage(cfg))
    ids, _, _ = load_embeddings(rep.outputs[0])
    assert ids == [r.id for r in load_catalog(cfg.root)] and rep.counts["embedded"] == 40
    # the same source with one file replaced in place: the same counts, other content
    (tmp_path / "b" / "000005.jpg").write_bytes((tmp_path / "a" / "000007.jpg").read_bytes())
    ingest(str(tmp_path / "b"), cfg.root, force=True)
    rep = LocalExecutor().run(EmbedStage(cfg))
    ids, _, _ = load_embeddings(rep.outputs[0])
    assert ids == [r.id for r in load_catalog(cfg.root)] and rep.counts["embedded"] == 40
