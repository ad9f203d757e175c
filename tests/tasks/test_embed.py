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
