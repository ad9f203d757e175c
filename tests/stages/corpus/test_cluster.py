import numpy as np

from schemas.config import MiningConfig, RunConfig
from store import storage
from schemas.layout import RunLayout
from stages.corpus.cluster import cluster_stages, default_k, load_assignments
from stages.corpus.embed import load_embeddings
from runtime.executors import LocalExecutor
from tests.conftest import EMBEDDED_MINING, copy_embedded


def _cluster(cfg):
    """The three K-means stages through the local executor; the last (kmeans) one's report."""
    return [LocalExecutor().run(stage) for stage in cluster_stages(cfg)][-1]


def test_every_id_is_assigned_a_rerun_is_a_noop_and_new_settings_refit(embedded, tmp_path):
    root = copy_embedded(embedded, str(tmp_path / "root"))
    emb_uri = embedded[1].replace(embedded[0], root)
    ids, _, _ = load_embeddings(emb_uri)
    cfg = RunConfig(root=root, mining={**EMBEDDED_MINING, "k": 4, "seed": 3})
    rep = _cluster(cfg)
    uri = rep.outputs[0]
    assert uri == RunLayout(root).clusters(emb_uri.rstrip('/').rsplit('/', 1)[-1]) and rep.counts["policy"] == "fit"
    assignments = load_assignments(uri)
    assert set(assignments) == set(ids) and set(assignments.values()) <= set(range(4))
    marker = storage.read_marker(uri)
    assert marker["points"] == len(ids) and marker["k"] == 4
    before = (tmp_path / "root" / "clusters").stat().st_mtime_ns
    again = _cluster(cfg)  # complete: read back, nothing written, nothing executed
    assert again.execution is None and again == rep.model_copy(update={"execution": None})
    assert load_assignments(uri) == assignments and (tmp_path / "root" / "clusters").stat().st_mtime_ns == before
    other = _cluster(RunConfig(root=root, mining={**EMBEDDED_MINING, "k": 9}))
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


def test_the_units_cluster_as_the_one_unit_path_does_through_a_split_and_a_growth(tmp_path):
    """kmeans-fit, kmeans-assign (per partition) and kmeans (per cluster range) against `cluster_stream`."""
    from stages.corpus.cluster import (cluster_generations, cluster_offsets, cluster_rows, cluster_stream,
                                       layout_rows)
    from tests.stages.pairs.test_mine_batches import _embed

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 24))
    parts = [_blobs(rng, centers, 300, 0.05) for _ in range(4)]
    root = str(tmp_path / "root")
    mining = {"embedder": "offline", "k": 4, "max_cluster_size": 250, "layout_rows": 300, "recluster_drift": 0.5}
    cfg = RunConfig(root=root, mining=mining)
    ref = str(tmp_path / "reference")
    for grow in (0, 30):
        if grow:
            parts.append(_blobs(rng, centers, grow, 0.05))
        _embed(root, parts)
        reports = [LocalExecutor().run(stage) for stage in cluster_stages(cfg)]
        uri = reports[-1].outputs[0]
        emb_uri = cluster_stages(cfg)[0].emb_uri
        m = cluster_stream(emb_uri, ref, MiningConfig(**mining))
        got = storage.read_marker(uri)
        assert {k: got[k] for k in m} == m and m["splits"] >= 2  # same k, splits, policy, epoch ...
        assert load_assignments(uri) == load_assignments(ref)
        assert np.array_equal(cluster_offsets(uri), cluster_offsets(ref))
        k = m["k"]
        ids, x, cl = cluster_rows(uri, 0, k)
        want = cluster_rows(ref, 0, k)
        assert ids == want[0] and np.array_equal(x, want[1]) and np.array_equal(cl, want[2])
        assert all(np.array_equal(a, b) for a, b in zip(cluster_generations(uri), cluster_generations(ref)))
        assert reports[2].items > 4  # cluster ranges of at most 300 rows
        # a range that starts inside the layout reads across range files
        lo, hi = int(cluster_offsets(uri)[1]) - 7, int(cluster_offsets(uri)[3]) + 5
        assert [b.decode() for b in layout_rows(uri, "ids", lo, hi)] == want[0][lo:hi]
    # the growth assigned the new partition only; the old ones kept their labels
    assert reports[0].counts["policy"].startswith("assigned 30 new rows")
    assert (reports[1].execution.ran, reports[1].execution.skipped) == (1, 4)
    assert sorted(p.name for p in (tmp_path / "root" / "clusters" / "offline-dct-hist" / "labels").iterdir()) == [
        "_SUCCESS.json", "e0000", f"final-e0000-n{sum(map(len, parts))}"]
