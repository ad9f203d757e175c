from schemas.config import MiningConfig
from tasks import storage
from tasks.cluster import cluster_embeddings, clusters_uri, default_k, load_assignments
from tasks.embed import load_embeddings


def test_every_id_is_assigned_and_a_rerun_is_a_noop(embedded, tmp_path):
    _, emb_uri = embedded
    ids, x, _ = load_embeddings(emb_uri)
    root = str(tmp_path / "root")
    uri = cluster_embeddings(ids, x, root, emb_uri, MiningConfig(k=4, seed=3))
    assert uri == clusters_uri(root, emb_uri)
    assignments = load_assignments(uri)
    assert set(assignments) == set(ids) and set(assignments.values()) <= set(range(4))
    marker = storage.read_marker(uri)
    assert marker["points"] == len(ids) and marker["k"] == 4
    before = (tmp_path / "root" / "clusters").stat().st_mtime_ns
    assert cluster_embeddings(ids, x, root, emb_uri, MiningConfig(k=9)) == uri  # complete: kept as it is
    assert load_assignments(uri) == assignments and storage.read_marker(uri)["k"] == 4
    assert (tmp_path / "root" / "clusters").stat().st_mtime_ns == before


def test_default_k():
    assert (default_k(10), default_k(5000), default_k(10**9)) == (1, 100, 10_000)
