import faiss
import numpy as np

from mining.pairs.kmeans import assign, spherical_kmeans


def blobs(n=3000, k=6, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    x = centres[rng.integers(0, k, n)] + 0.3 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_deterministic_and_assignments_are_nearest_centroids():
    x = blobs()
    a = spherical_kmeans(x, 6, seed=1)
    b = spherical_kmeans(x, 6, seed=1)
    assert np.array_equal(a.assignments, b.assignments) and np.array_equal(a.centroids, b.centroids)
    assert np.allclose(np.linalg.norm(a.centroids, axis=1), 1, atol=1e-4)
    assert np.array_equal(a.assignments, np.argmax(x @ a.centroids.T, axis=1))


def test_matches_raw_faiss_when_nothing_is_split():
    x = blobs(seed=2)
    ours = spherical_kmeans(x, 8, seed=4, niter=15)
    km = faiss.Kmeans(x.shape[1], 8, niter=15, spherical=True, seed=4, max_points_per_centroid=256,
                      min_points_per_centroid=1)
    km.train(x)
    _, lab = km.index.search(x, 1)
    assert np.array_equal(ours.assignments, lab[:, 0]) and not ours.split_log


def test_clusters_over_the_cap_are_split_until_none_is():
    x = blobs(n=4000, k=2, seed=3)
    res = spherical_kmeans(x, 2, seed=0, max_cluster_size=300)
    assert res.sizes.max() <= 300 and res.sizes.sum() == 4000 and res.split_log
    assert len(res.centroids) == len(res.sizes) > 2
    again = spherical_kmeans(x, 2, seed=0, max_cluster_size=300)
    assert np.array_equal(res.assignments, again.assignments)


def test_identical_points_are_chunked_when_kmeans_cannot_split():
    x = np.tile(np.eye(1, 8, dtype=np.float32), (50, 1))
    res = spherical_kmeans(x, 1, max_cluster_size=20)
    assert res.sizes.max() <= 20 and res.sizes.sum() == 50
    assert any(s["how"] == "chunked" for s in res.split_log)


def test_batched_assignment_equals_one_shot():
    x = blobs(n=1000)
    c = spherical_kmeans(x, 5).centroids
    assert np.array_equal(assign(x, c, batch=37), assign(x, c, batch=100_000))
