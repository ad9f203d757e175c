import numpy as np
import pytest

from mining.decode import decode_image
from mining.embedders import OfflineEmbedder
from tasks.ingest import load_catalog
from tasks.sources import read_uri


@pytest.mark.slow
def test_actor_pool_embeds_like_the_embedder_in_process(embedded):
    import ray

    from tasks.ray_pool import EmbedPool

    root, _ = embedded
    records = load_catalog(root)[:12]
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pool = EmbedPool("offline", str(root), max_pixels=10**8, actors=2)
        ids, vecs, skipped = pool.embed(records, batch_size=5)  # 3 batches over 2 actors, order kept
        pool.close()
    finally:
        ray.shutdown()
    assert ids == [r.id for r in records] and skipped == {} and vecs.dtype == np.float16
    assert (pool.name, pool.dim) == (OfflineEmbedder.name, OfflineEmbedder().dim)
    local = OfflineEmbedder()([decode_image(read_uri(r.uri), max_pixels=10**8, min_side=1).image for r in records])
    assert np.allclose(vecs.astype(np.float32), local, atol=2e-3)
