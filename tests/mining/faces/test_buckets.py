import numpy as np

from mining.faces.buckets import assign, bucket_edges, fit_quantiser, n_buckets
from mining.faces.pairs import face_pairs
from mining.pairs.band import band_edges


def planted(people: int, per: int, seed: int = 0) -> np.ndarray:
    """Unit 128-d descriptors: `per` faces around each of `people` random identities, two faces of one
    identity at cosine ~0.93-0.98 (the aligned and band range), two identities near 0."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((people * per, 128))
    noise *= (rng.uniform(0.12, 0.24, people * per) / np.linalg.norm(noise, axis=1))[:, None]
    x = np.repeat(centres, per, axis=0) + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _pairs(e) -> set[tuple[int, int]]:
    return set(zip(e.i.tolist(), e.j.tolist()))


def test_ivf_search_probing_every_list_finds_exactly_the_all_pairs_edges():
    x = planted(80, 5)
    exact = band_edges(x, 0.9, 0.98)
    ann = bucket_edges(x, 0.9, 0.98, exact_max=16, nprobe=10_000)  # every list probed: exhaustive
    assert _pairs(ann) == _pairs(exact) and len(exact) > 100
    assert ann.duplicates == exact.duplicates
    got = dict(zip(zip(ann.i.tolist(), ann.j.tolist()), ann.score.tolist()))
    assert np.allclose([got[p] for p in zip(exact.i.tolist(), exact.j.tolist())], exact.score, atol=1e-5)
    assert (ann.i < ann.j).all() and len(set(zip(ann.i.tolist(), ann.j.tolist()))) == len(ann)


def test_ivf_search_with_few_lists_probed_finds_a_subset():
    x = planted(80, 5)
    exact = _pairs(band_edges(x, 0.9, 1.0))
    ann = _pairs(bucket_edges(x, 0.9, 1.0, exact_max=16, nprobe=1))
    assert ann <= exact and len(ann) > 0.5 * len(exact)  # approximate: never a pair the exact search rejects


def test_buckets_miss_exactly_the_pairs_split_across_two_buckets_and_find_each_other_pair_once():
    x = planted(60, 5, seed=1)
    k = n_buckets(len(x), 80)
    c = fit_quantiser(x, k, seed=0)
    # one more person whose two photos sit either side of the boundary between buckets 0 and 1
    mid, step = c[0] + c[1], c[0] - c[1]
    two = np.stack([mid + 0.1 * step, mid - 0.1 * step])
    x = np.concatenate([x, two / np.linalg.norm(two, axis=1, keepdims=True)]).astype(np.float32)
    lm = np.zeros((len(x), 5, 2), np.float32)
    sizes = np.tile([100, 100], (len(x), 1))
    kw = dict(band=(0.933, 0.982), aligned_min=0.903, max_shift=1.0, max_pairs_per_face=100,
              max_pairs_per_set=10_000, seed=0)
    whole = face_pairs(x, lm, sizes, **kw)
    b = assign(x, c)
    assert k == 4 and len(np.unique(b)) == 4 and b[-2] != b[-1]
    found: list[tuple[int, int]] = []
    for v in range(k):
        rows = np.flatnonzero(b == v)
        part = face_pairs(x[rows], lm[rows], sizes[rows], **kw)
        found += [(int(rows[i]), int(rows[j])) for i, j, *_ in part.aligned]
    assert len(found) == len(set(found))  # no pair found in two buckets
    every = {(i, j) for i, j, *_ in whole.aligned}
    split = {(i, j) for i, j in every if b[i] != b[j]}
    assert split == {(len(x) - 2, len(x) - 1)}
    assert set(found) == every - split  # what the buckets miss: the pairs whose faces sit in two buckets


def test_assignment_is_per_face_and_a_single_bucket_is_the_all_pairs_search():
    x = planted(10, 4)
    c = fit_quantiser(x, 3, seed=0)
    b = assign(x, c)
    assert np.array_equal(assign(x[5:9], c), b[5:9])  # a face's bucket depends on itself only
    assert (assign(x, fit_quantiser(x, 1, seed=0)) == 0).all()
    e, a = band_edges(x, 0.9, 1.0), bucket_edges(x, 0.9, 1.0)
    assert np.array_equal(e.i, a.i) and np.array_equal(e.j, a.j) and np.array_equal(e.score, a.score)
