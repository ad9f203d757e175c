import numpy as np

from mining.faces.buckets import assign, bucket_edges, fit_quantiser, n_buckets, owner
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


def _in_buckets(x, member, k, kw):
    """face_pairs per bucket, each pair kept by its owner: the (global) aligned pairs found, unit by unit."""
    found: list[tuple[int, int]] = []
    for v in range(k):
        rows = np.array([r for r, bs in enumerate(member) if v in bs])
        keep = (lambda i, j, rows=rows, v=v: owner(member[rows[i]], member[rows[j]]) == v)
        part = face_pairs(x[rows], np.zeros((len(rows), 5, 2), np.float32), np.full((len(rows), 2), 100), **kw,
                          keep=keep)
        found += [(int(rows[i]), int(rows[j])) for i, j, *_ in part.aligned]
    return found


def test_buckets_miss_exactly_the_pairs_split_across_buckets_and_spill_finds_them_once():
    x = planted(60, 5, seed=1)
    k = n_buckets(len(x), 80)
    mean, c = fit_quantiser(x, k, seed=0)
    # one more person whose two photos sit either side of the boundary between buckets 0 and 1
    mid, step = c[0] + c[1], c[0] - c[1]
    two = mean + 0.25 * np.stack([mid + 0.03 * step, mid - 0.03 * step]) / np.linalg.norm(mid)
    x = np.concatenate([x, two / np.linalg.norm(two, axis=1, keepdims=True)]).astype(np.float32)
    assert float(x[-1] @ x[-2]) > 0.95  # one person
    kw = dict(band=(0.933, 0.982), aligned_min=0.903, max_shift=1.0, max_pairs_per_face=100,
              max_pairs_per_set=10_000, seed=0)
    every = {(i, j) for i, j, *_ in face_pairs(x, np.zeros((len(x), 5, 2), np.float32), np.full((len(x), 2), 100),
                                               **kw).aligned}
    home, member = assign(x, mean, c)
    assert k == 4 and len(np.unique(home)) == 4 and home[-2] != home[-1] and all(len(m) == 1 for m in member)
    found = _in_buckets(x, member, k, kw)
    split = {(i, j) for i, j in every if home[i] != home[j]}
    assert (len(x) - 2, len(x) - 1) in split
    assert len(found) == len(set(found)) and set(found) == every - split  # missed: the split pairs, and only them
    home2, member2 = assign(x, mean, c, spill=0.1, max_extra=2)
    assert np.array_equal(home2, home) and sum(len(m) for m in member2) > len(x)  # the same homes, some spilled
    found2 = _in_buckets(x, member2, k, kw)
    assert len(found2) == len(set(found2))  # a pair in two buckets is kept by one unit only
    assert set(found) <= set(found2) <= every and (len(x) - 2, len(x) - 1) in found2


def test_assignment_is_per_face_and_a_single_bucket_is_the_all_pairs_search():
    x = planted(10, 4)
    mean, c = fit_quantiser(x, 3, seed=0)
    home, member = assign(x, mean, c, spill=0.1)
    assert np.array_equal(assign(x[5:9], mean, c, spill=0.1)[0], home[5:9])  # a face's buckets: its own
    assert assign(x[5:9], mean, c, spill=0.1)[1] == member[5:9]
    assert (assign(x, *fit_quantiser(x, 1, seed=0))[0] == 0).all()
    e, a = band_edges(x, 0.9, 1.0), bucket_edges(x, 0.9, 1.0)
    assert np.array_equal(e.i, a.i) and np.array_equal(e.j, a.j) and np.array_equal(e.score, a.score)
