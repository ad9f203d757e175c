import numpy as np
import pytest
from PIL import Image

from mining.pairs.geometric import Keypoints, Verifier, coherent_group, coherent_pair, grey, match, same_subject
from mining.pairs.groups import tight_groups
from mining.supervision import View
from mining.image.transforms import apply
from schemas.config import SupervisionConfig

CFG = SupervisionConfig()


def _photo(name: str, side: int = 256) -> Image.Image:
    import skimage.data
    from sklearn.datasets import load_sample_image

    a = load_sample_image("china.jpg") if name == "china" else getattr(skimage.data, name)()
    im = Image.fromarray(a).convert("RGB")
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def _variants(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A photo under the demo families' transformations, a rescale and a mirrored crop."""
    base = _photo(name)
    rng = np.random.default_rng(seed)
    out = {"base": base}
    for t in ("crop", "hflip", "color", "recompress", "rotate", "brighten"):
        out[t] = apply(t, base, rng).image
    out["half"] = base.resize((base.width // 2, base.height // 2), Image.Resampling.BILINEAR)
    out["crop_flip"] = apply("crop", base, rng).image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return {k: np.asarray(v.convert("RGB")) for k, v in out.items()}


@pytest.fixture(scope="module")
def astronaut():
    return _variants("astronaut")


@pytest.fixture(scope="module")
def coffee():
    return _variants("coffee", seed=1)


def test_views_of_one_photo_match(astronaut):
    base = astronaut["base"]
    for name, im in astronaut.items():
        if name == "base":
            continue
        ok, m = same_subject(base, im, CFG.group_min_inliers)
        assert ok, (name, m)
    ok, m = same_subject(astronaut["crop"], astronaut["crop_flip"], CFG.group_min_inliers)
    assert ok and m.inliers >= CFG.group_min_inliers
    mirrored = match(Keypoints(base), Keypoints(astronaut["hflip"]))
    assert mirrored.flipped and mirrored.inliers > 3 * CFG.group_min_inliers  # the mirror is what matched


def test_different_photos_do_not_match(astronaut, coffee):
    images = {n: np.asarray(_photo(n)) for n in ("chelsea", "rocket", "camera", "page", "china")}
    images["coffee"] = coffee["base"]
    others = list(images)
    images |= {f"astronaut_{k}": astronaut[k] for k in ("base", "hflip", "crop")}
    ver = Verifier(images.__getitem__, CFG.group_min_inliers, cache=len(images))
    for k in ("base", "hflip", "crop"):
        for n in others:
            assert ver.inliers(f"astronaut_{k}", n) < CFG.group_min_inliers / 2, (k, n)
    for i, a in enumerate(others):
        for b in others[i + 1:]:
            assert not ver.same(a, b), (a, b)


def test_grey_tiny_and_odd_sized_images_work(astronaut):
    g = grey(np.zeros((20, 30), np.uint8))
    assert g.dtype == np.uint8 and min(g.shape) >= 20
    assert max(grey(np.zeros((2000, 3000, 3), np.uint8)).shape) == 512
    flat = np.full((40, 40, 3), 128, np.uint8)
    ok, m = same_subject(flat, flat, CFG.group_min_inliers)
    assert not ok and m.inliers == 0  # nothing to match on a flat image
    grey_astro = np.asarray(Image.fromarray(astronaut["base"]).convert("L"))  # 2-D
    assert same_subject(grey_astro, astronaut["crop"], CFG.group_min_inliers)[0]
    tall = astronaut["base"][:, :64]  # 256 x 64
    assert same_subject(tall, astronaut["base"], CFG.group_min_inliers)[0]


def _view(task, inputs, target, generators=(), masks=None):
    return View(task=task, instruction="x", inputs=list(inputs), masks=masks or [None] * len(inputs),
                target=target, generators=list(generators))


def test_coherent_group_fires_on_a_mixed_group(astronaut, coffee):
    good = _view("series_generation", [astronaut[k] for k in ("crop", "hflip", "color")], astronaut["rotate"])
    why, scores = coherent_group(good, CFG)
    assert why is None and scores["group_min_inliers"] >= CFG.group_min_inliers
    mixed = _view("series_generation", [astronaut["crop"], coffee["base"], astronaut["color"]], astronaut["rotate"])
    why, scores = coherent_group(mixed, CFG)
    assert why == "incoherent_group" and scores["group_min_inliers"] < CFG.group_min_inliers
    # inputs that each match the target but not each other still fail: two halves of one photo
    left, right = astronaut["base"][:, :100], astronaut["base"][:, -100:]
    why, _ = coherent_group(_view("series_generation", [left, right], astronaut["base"]), CFG)
    assert why == "incoherent_group"
    ref = _view("reference_generation", [coffee["base"]], astronaut["base"])
    assert coherent_group(ref, CFG)[0] == "incoherent_group"


def test_face_erased_references_are_not_tested_geometrically(astronaut, coffee):
    erased = astronaut["base"].copy()
    mask = np.zeros(erased.shape[:2], bool)
    mask[60:140, 90:170] = True
    erased[mask] = 0
    v = _view("reference_generation", [erased, coffee["base"][:64, :64]], astronaut["base"],
              generators=["face-pairs", "face-erased-reference"], masks=[mask, None])
    why, scores = coherent_group(v, CFG)
    assert why is None and scores["geometric_applies"] == 0.0


def test_coherent_pair(astronaut, coffee):
    why, scores = coherent_pair(_view("general_editing", [astronaut["crop"]], astronaut["brighten"]), CFG)
    assert why is None and scores["pair_inliers"] >= CFG.group_min_inliers
    why, scores = coherent_pair(_view("general_editing", [coffee["crop"]], astronaut["brighten"]), CFG)
    assert why == "incoherent_pair" and scores["pair_inliers"] < CFG.group_min_inliers


def test_verifier_caches_are_bounded(astronaut, coffee):
    images = {f"a{k}": v for k, v in astronaut.items()} | {f"c{k}": v for k, v in coffee.items()}
    loads = []
    ver = Verifier(lambda i: loads.append(i) or images[i], CFG.group_min_inliers, cache=3, answers=4)
    assert ver.same("abase", "acrop") and ver.same("acrop", "abase") and not ver.same("abase", "cbase")
    assert loads == ["abase", "acrop", "cbase"]
    for k in ("chflip", "ccolor", "crotate"):
        ver.same("abase", k)
    assert len(ver._pairs) <= 3 and len(ver._done) <= 4


def _arc(angles_deg, dim=8, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.radians(np.asarray(angles_deg, float))
    x = np.zeros((len(t), dim), np.float32)
    x[:, 0], x[:, 1] = np.cos(t), np.sin(t)
    x[:, 2:] = jitter * rng.standard_normal((len(t), dim - 2))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_chain_through_the_band_is_split_into_tight_groups():
    # three clumps at 0, 30 and 60 degrees: A ~ B ~ C in the band, A and C far apart (cos 0.5)
    x = _arc([0] * 5 + [30] * 5 + [60] * 5, jitter=0.08)
    lo, hi = 0.8, 0.999
    clump = np.repeat([0, 1, 2], 5)
    for seed in range(5):
        sg = tight_groups(x, lo, hi, np.random.default_rng(seed))
        assert sg.grouped + sg.incoherent + sg.leftover == len(x) and sg.groups
        for inputs, target in sg.groups:
            assert 3 <= len(inputs) <= 8 and target not in inputs
            c = x[inputs] @ x[target]
            assert np.all((c >= lo) & (c <= hi))
            m = x[inputs] @ x[inputs].T
            assert np.all(m >= lo - 1e-6)
            assert {0, 2} - set(clump[[*inputs, target]].tolist())  # never both ends of the chain


def test_groups_of_photos_an_embedding_cannot_tell_apart_are_split_by_geometry(astronaut, coffee):
    # every pair in the band: the embedding sees one set; geometry sees two photos
    a = [astronaut[k] for k in ("base", "crop", "hflip", "color", "rotate")]
    c = [coffee[k] for k in ("base", "crop", "hflip", "color", "rotate")]
    images = a + c
    x = _arc(np.linspace(0, 10, 10), jitter=0.02)
    ver = Verifier(lambda i: images[int(i)], CFG.group_min_inliers)
    sg = tight_groups(x, 0.5, 0.9999, np.random.default_rng(0), lambda i, j: ver.same(str(i), str(j)))
    assert sg.groups and sg.grouped + sg.incoherent + sg.leftover == 10
    for inputs, target in sg.groups:
        assert len({int(k) < 5 for k in [*inputs, target]}) == 1  # one photo per group
    blind = tight_groups(x, 0.5, 0.9999, np.random.default_rng(0))  # without geometry they mix
    assert any(len({int(k) < 5 for k in [*i, t]}) == 2 for i, t in blind.groups)


def test_tight_groups_are_seeded_and_disjoint():
    x = _arc(np.linspace(0, 5, 40), dim=16, jitter=0.05, seed=1)
    g1 = tight_groups(x, 0.5, 0.9999, np.random.default_rng(0))
    g2 = tight_groups(x, 0.5, 0.9999, np.random.default_rng(0))
    assert [(i.tolist(), t) for i, t in g1.groups] == [(i.tolist(), t) for i, t in g2.groups]
    used = [k for i, t in g1.groups for k in [*i.tolist(), t]]
    assert len(used) == len(set(used)) and len(x) - len(used) == g1.incoherent + g1.leftover < 4
    assert tight_groups(x[:3], 0.5, 0.9999, np.random.default_rng(0)).groups == []
