import numpy as np

from mining.embedders import OfflineEmbedder
from tasks.embed import embed_catalog, load_embeddings
from tasks.ingest import load_catalog


def test_embeddings_are_partitioned_float16_with_their_embedder(embedded):
    root, emb_uri = embedded
    ids, x, marker = load_embeddings(emb_uri)
    assert marker["embedder"] == "offline-dct-hist" and marker["partitions"] == 3 and len(ids) == 97
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-3)
    assert embed_catalog(load_catalog(root), root, OfflineEmbedder()) == emb_uri  # complete: a no-op


def test_counts_that_do_not_reconcile_stop_the_partition_and_the_marker(tmp_path):
    import numpy as np
    import pytest

    from tasks.embed import finalize_embeddings, part_name, write_partition

    out = str(tmp_path / "emb")
    vecs = np.ones((2, 4), np.float32)
    with pytest.raises(RuntimeError, match="3 catalog rows in, 2 embedded"):
        write_partition(f"{out}/{part_name(0)}", ["a", "b"], vecs, "e", "1", {}, 3)
    write_partition(f"{out}/{part_name(0)}", ["a", "b"], vecs, "e", "1", {"corrupt": 1}, 3)
    with pytest.raises(RuntimeError, match="the catalog has 4 images"):
        finalize_embeddings(out, 1, 4, (0.8, 0.9))
    assert not (tmp_path / "emb" / "_SUCCESS.json").exists()
    finalize_embeddings(out, 1, 3, (0.8, 0.9))
    assert (tmp_path / "emb" / "_SUCCESS.json").exists()
