import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mining.pairs.band import UnionFind, band_edges, disjoint_sets, pairs_from_sets

LO, HI = 0.85, 0.98


def planted(n_groups=40, per=(2, 12), noise=(0.02, 0.5), n_single=200, d=32, seed=0):
    """Groups around random centres with varied spread (some chain, some fall apart), plus singletons."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_groups):
        c = rng.standard_normal(d)
        c /= np.linalg.norm(c)
        k = int(rng.integers(*per))
        sigma = float(rng.uniform(*noise)) / np.sqrt(d)
        rows.append(c + sigma * rng.standard_normal((k, d)))
    rows.append(rng.standard_normal((n_single, d)))
    x = np.concatenate(rows)
    x = x[rng.permutation(len(x))]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_components(x, lo, hi):
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    iu = np.triu_indices(len(x), 1)
    keep = (s[iu] >= lo) & (s[iu] <= hi)
    g = coo_matrix((np.ones(keep.sum()), (iu[0][keep], iu[1][keep])), shape=(len(x), len(x)))
    _, lab = connected_components(g, directed=False)
    comps = {}
    for i, l in enumerate(lab):
        comps.setdefault(l, []).append(i)
    return sorted((sorted(c) for c in comps.values() if len(c) > 1), key=lambda c: c[0]), s


def test_sets_equal_connected_components_of_the_band_graph():
    x = planted()
    e = band_edges(x, LO, HI, block=64)  # many blocks, including ragged last ones
    sets = [s.tolist() for s in disjoint_sets(len(x), e)]
    want, s = reference_components(x, LO, HI)
    assert sets == want and len(want) > 10
    assert e.duplicates == int(np.count_nonzero(s[np.triu_indices(len(x), 1)] > HI))
    assert np.all(e.i < e.j)
    assert np.allclose(e.score, s[e.i, e.j], atol=1e-5)


def test_every_emitted_pair_is_in_band_and_runs_repeat_exactly():
    x = planted(seed=3)
    e = band_edges(x, LO, HI, block=100)
    sets = disjoint_sets(len(x), e)
    p = pairs_from_sets(x, sets, LO, HI, max_pairs_per_set=5, seed=7)
    sims = np.einsum("nd,nd->n", x[p.i], x[p.j])
    assert len(p.i) > 0 and np.all((sims >= LO - 1e-6) & (sims <= HI + 1e-6))
    assert p.out_of_band > 0  # chaining let out-of-band pairs into sets, and they were re-checked away
    member_set = {int(m): k for k, s in enumerate(sets) for m in s}
    assert all(member_set[a] == member_set[b] for a, b in zip(p.i, p.j))
    q = pairs_from_sets(x, disjoint_sets(len(x), band_edges(x, LO, HI, block=100)), LO, HI, 5, seed=7)
    assert np.array_equal(p.i, q.i) and np.array_equal(p.j, q.j) and np.array_equal(p.score, q.score)


def test_pair_cap_is_a_seeded_sample():
    x = planted(n_groups=1, per=(30, 31), noise=(0.3, 0.31), n_single=0, seed=5)
    sets = disjoint_sets(len(x), band_edges(x, LO, HI))
    full = pairs_from_sets(x, sets, LO, HI, max_pairs_per_set=10_000, seed=0)
    capped = pairs_from_sets(x, sets, LO, HI, max_pairs_per_set=12, seed=0)
    other = pairs_from_sets(x, sets, LO, HI, max_pairs_per_set=12, seed=1)
    assert len(capped.i) == 12 and capped.capped == len(full.i) - 12
    full_pairs = set(zip(full.i.tolist(), full.j.tolist()))
    assert set(zip(capped.i.tolist(), capped.j.tolist())) <= full_pairs
    assert set(zip(capped.i.tolist(), capped.j.tolist())) != set(zip(other.i.tolist(), other.j.tolist()))


def test_union_find_by_size_with_path_compression():
    uf = UnionFind(6)
    assert uf.union(0, 1) and uf.union(2, 3) and uf.union(1, 3)
    assert not uf.union(0, 2)
    assert uf.size[uf.find(0)] == 4 and len({uf.find(i) for i in range(4)}) == 1
    uf.find(3)
    assert uf.parent[3] == uf.find(0)  # compressed straight to the root
    lab = uf.labels()
    assert lab[4] != lab[0] and lab[5] != lab[4]


def test_bad_band_is_refused():
    with pytest.raises(ValueError, match="lo <= hi"):
        band_edges(np.eye(3, dtype=np.float32), 0.9, 0.8)


@pytest.mark.gpu
def test_gpu_band_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.fail("marked gpu but no CUDA device")
    x = planted(seed=11)
    cpu = disjoint_sets(len(x), band_edges(x, LO, HI, block=128))
    gpu = disjoint_sets(len(x), band_edges(x, LO, HI, block=128, device="cuda", dtype="fp16"))
    agree = sum(any(np.array_equal(a, b) for b in gpu) for a in cpu)
    assert agree >= 0.95 * len(cpu)  # fp16 rounding may move pairs sitting on a threshold


def test_band_in_row_blocks_equals_one_pass_and_a_delta_keeps_the_edges_touching_new_rows():
    from mining.pairs.band import band_edges_rows, pairs_from_sets

    rng = np.random.default_rng(5)
    c = rng.standard_normal((4, 24))
    x = c[rng.integers(0, 4, 500)] + 0.35 * rng.standard_normal((500, 24))
    x[250:260] = x[240:250] + 0.01 * rng.standard_normal((10, 24))  # near duplicates: above the band
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    one = band_edges(x, 0.8, 0.97, block=32)
    assert len(one) > 1000 and one.duplicates > 0
    reads = []
    for rb in (32, 96, 100, 10_000):
        blocked = band_edges_rows(lambda a, b: reads.append((a, b)) or x[a:b], 500, 0.8, 0.97, block=32, row_block=rb)
        assert all(b - a <= max(32, rb // 32 * 32) for a, b in reads)
        for f in ("i", "j", "score"):
            np.testing.assert_array_equal(getattr(blocked, f), getattr(one, f))
        assert blocked.duplicates == one.duplicates
        reads.clear()
    delta = band_edges_rows(lambda a, b: x[a:b], 500, 0.8, 0.97, block=32, row_block=64, first_new=480)
    new = one.j >= 480
    np.testing.assert_array_equal(delta.i, one.i[new])
    np.testing.assert_array_equal(delta.score, one.score[new])
    # pairs of a set with earlier rows: only those holding a new row, each once
    sets = [np.arange(470, 500)]
    full = pairs_from_sets(x, sets, 0.8, 0.97, 10_000, seed=1)
    part = pairs_from_sets(x, sets, 0.8, 0.97, 10_000, seed=1, first_new=480)
    keep = full.j >= 480
    assert np.array_equal(part.i, full.i[keep]) and np.array_equal(part.j, full.j[keep])
    assert part.out_of_band == full.out_of_band - sum(1 for a in range(470, 480) for b in range(a + 1, 480)
                                                      if not 0.8 <= x[a] @ x[b] <= 0.97)
