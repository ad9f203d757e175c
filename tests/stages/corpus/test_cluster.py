import numpy as np

from schemas.config import MiningConfig, RunConfig
from store import storage
from schemas.layout import RunLayout
from stages.corpus.cluster import KMeansStage, default_k, load_assignments
from stages.corpus.embed import load_embeddings
from runtime.executors import LocalExecutor
from tests.conftest import EMBEDDED_MINING, copy_embedded


def test_every_id_is_assigned_a_rerun_is_a_noop_and_new_settings_refit(embedded, tmp_path):
    root = copy_embedded(embedded, str(tmp_path / "root"))
    emb_uri = embedded[1].replace(embedded[0], root)
    ids, _, _ = load_embeddings(emb_uri)
    cfg = RunConfig(root=root, mining={**EMBEDDED_MINING, "k": 4, "seed": 3})
    rep = LocalExecutor().run(KMeansStage(cfg))
    uri = rep.outputs[0]
    assert uri == RunLayout(root).clusters(emb_uri.rstrip('/').rsplit('/', 1)[-1]) and rep.counts["policy"] == "fit"
    assignments = load_assignments(uri)
    assert set(assignments) == set(ids) and set(assignments.values()) <= set(range(4))
    marker = storage.read_marker(uri)
    assert marker["points"] == len(ids) and marker["k"] == 4
    before = (tmp_path / "root" / "clusters").stat().st_mtime_ns
    again = LocalExecutor().run(KMeansStage(cfg))  # complete: read back, nothing written, nothing executed
    assert again.execution is None and again == rep.model_copy(update={"execution": None})
    assert load_assignments(uri) == assignments and (tmp_path / "root" / "clusters").stat().st_mtime_ns == before
    other = LocalExecutor().run(KMeansStage(RunConfig(root=root, mining={**EMBEDDED_MINING, "k": 9})))
    assert other.counts["policy"] == "refit: the K-means settings changed"
    assert storage.read_marker(uri)["requested_k"] == 9


def test_default_k():
    assert (default_k(10), default_k(5000), default_k(10**9)) == (1, 100, 10_000)


def _emb_dir(tmp_path, parts, salt=""):
    """An embedding directory of the given float32 partitions (ids are sha256-like hex)."""
    import hashlib

    from stages.corpus.embed import finalize_embeddings, write_partition

    out = str(tmp_path / "emb" / "toy")
    n = 0
    for p, x in enumerate(parts):
        ids = [hashlib.sha256(f"{salt}{n + i}".encode()).hexdigest() for i in range(len(x))]
        write_partition(f"{out}/part-{p:05d}.parquet", ids, x, "toy", "1", {}, len(x))
        n += len(x)
    finalize_embeddings(out, len(parts), n, (0.9, 0.99))
    return out


def _blobs(rng, centers, n, noise):
    x = centers[rng.integers(0, len(centers), n)] + noise * rng.standard_normal((n, centers.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_grown_embeddings_join_the_existing_clusters_unless_they_drift(tmp_path):
    from stages.corpus.cluster import cluster_rows, cluster_stream

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 16))
    first = [_blobs(rng, centers, 150, 0.05), _blobs(rng, centers, 150, 0.05)]
    cfg = MiningConfig(k=4, recluster_growth=1.0, recluster_drift=0.05)
    out = str(tmp_path / "clusters")
    m0 = cluster_stream(_emb_dir(tmp_path / "a", first), out, cfg)
    old = load_assignments(out)
    assert m0["policy"] == "fit" and m0["points"] == 300
    # 40 more rows from the same four blobs: assigned, old rows keep their cluster
    first.append(_blobs(rng, centers, 40, 0.05))
    m1 = cluster_stream(_emb_dir(tmp_path / "a", first), out, cfg)
    assert m1["policy"].startswith("assigned 40 new rows") and m1["epoch"] == 0
    new = load_assignments(out)
    assert all(new[i] == c for i, c in old.items()) and len(new) == 340
    # the by-cluster layout holds every row once, grouped by cluster, with its own vector
    ids, x, cl = cluster_rows(out, 0, 4)
    assert sorted(ids) == sorted(new) and all(new[i] == c for i, c in zip(ids, cl))
    assert np.all(np.diff(cl) >= 0)
    # rows far from every centroid: the fit is made again (a new epoch)
    far = _blobs(rng, rng.standard_normal((4, 16)), 40, 0.05)
    m2 = cluster_stream(_emb_dir(tmp_path / "a", first + [far]), out, cfg)
    assert m2["policy"].startswith("refit: new rows' mean cosine") and m2["epoch"] == 1
    # the corpus more than doubled since the fit (380 rows): fitted again too
    m3 = cluster_stream(_emb_dir(tmp_path / "a", first + [far, _blobs(rng, centers, 400, 0.05)]), out, cfg)
    assert m3["policy"].startswith("refit: 780 rows > 380") and m3["epoch"] == 2
    # rows that are not those clustered before (another catalog): fitted again, not relabelled
    other = _emb_dir(tmp_path / "b", [_blobs(rng, centers, 800, 0.05)], salt="other")
    import shutil

    shutil.rmtree(tmp_path / "a" / "emb")
    m4 = cluster_stream(other, out, cfg)
    assert m4["policy"].startswith("refit: the embedded rows") and m4["epoch"] == 3


def test_each_growth_assigned_to_the_centroids_is_a_generation_after_the_earlier_ones_in_each_cluster(tmp_path):
    from stages.corpus.cluster import cluster_generations, cluster_offsets, cluster_rows, cluster_stream

    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 16))
    parts = [_blobs(rng, centers, 200, 0.05)]
    cfg = MiningConfig(k=3, recluster_growth=1.0, recluster_drift=0.5)
    out = str(tmp_path / "clusters")
    sizes = []
    for grow in (0, 6, 9):
        if grow:
            parts.append(_blobs(rng, centers, grow, 0.05))
        m = cluster_stream(_emb_dir(tmp_path / "a", parts), out, cfg)
        sizes.append(sum(map(len, parts)))
    assert m["policy"].startswith("assigned 9 new rows")
    counts, digests = cluster_generations(out)
    assert counts.shape == digests.shape == (3, 3) and counts.sum(axis=1).tolist() == [200, 6, 9]
    assign = load_assignments(out)
    ids_in_order = list(assign)  # embedding order
    gen_of = {i: int(np.searchsorted(sizes, r, side="right")) for r, i in enumerate(ids_in_order)}
    offsets = cluster_offsets(out)
    for c in range(3):
        ids, _, _ = cluster_rows(out, c, c + 1)
        assert [gen_of[i] for i in ids] == sorted(gen_of[i] for i in ids)  # generations in order in a cluster
        assert [sum(1 for i in ids if gen_of[i] == g) for g in range(3)] == counts[:, c].tolist()
        assert len(ids) == offsets[c + 1] - offsets[c]
    # a refit starts over: one generation
    parts.append(_blobs(rng, rng.standard_normal((3, 16)), 300, 0.05))
    m = cluster_stream(_emb_dir(tmp_path / "a", parts), out, cfg)
    assert m["policy"].startswith("refit") and cluster_generations(out)[0].shape == (1, 3)
