"""Tight style sets on a planted corpus (two style families, photos, faces, gradients), which bank style a set
is in (fixed points), and the style reference check."""

import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_image

from mining.pairs.band import band_edges, disjoint_sets
from mining.style.features import check_extractor, style_reference_ok
from mining.style.fixed import in_style, set_style
from mining.style.sets import set_stats, tight_sets
from mining.style.stylize import stylize
from mining.supervision import View
from schemas.config import StyleConfig, SupervisionConfig

POSTER = [("chelsea", 0), ("coffee", 1), ("rocket", 2), ("astronaut", 3), ("china.jpg", 0), ("flower.jpg", 3)]
INK = [("chelsea", 3), ("coffee", 2), ("rocket", 0), ("astronaut", 1), ("china.jpg", 2), ("flower.jpg", 1)]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "retina",
          "china.jpg", "flower.jpg")
CONTENTS = ("camera", "retina", "moon")


def _load(name: str) -> Image.Image:
    a = load_sample_image(name) if name.endswith(".jpg") else getattr(skimage.data, name)()
    return Image.fromarray(a).convert("RGB")


def _photo(name: str, side: int = 112) -> np.ndarray:
    im = _load(name)
    im.thumbnail((side, side))
    return np.asarray(im)


def _quarter(name: str, q: int, side: int = 96) -> np.ndarray:
    im = _load(name)
    w, h = im.width // 2, im.height // 2
    im = im.crop(((q % 2) * w, (q // 2) * h, (q % 2) * w + w, (q // 2) * h + h))
    im.thumbnail((side, side))
    return np.asarray(im)


def _face(i: int) -> np.ndarray:
    g = Image.fromarray((skimage.data.lfw_subset()[i] * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
    return np.stack([np.asarray(g)] * 3, -1)


def _gradient(rng: np.random.Generator, side: int = 96) -> np.ndarray:
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, side)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, side)[:, None, None]
    return np.broadcast_to(a * (1 - t) + b * t, (side, side, 3)).astype(np.uint8).copy()


@pytest.fixture(scope="module")
def corpus():
    """(images, labels, features): the two families, photos, LFW faces, gradients."""
    rng = np.random.default_rng(0)
    imgs = [stylize("poster", _quarter(n, q)) for n, q in POSTER] + [stylize("ink", _quarter(n, q)) for n, q in INK]
    labels = ["poster"] * len(POSTER) + ["ink"] * len(INK)
    imgs += [_photo(n) for n in PHOTOS] + [_face(i) for i in range(12)] + [_gradient(rng) for _ in range(6)]
    labels += ["photo"] * len(PHOTOS) + ["face"] * 12 + ["gradient"] * 6
    return imgs, np.array(labels), check_extractor()(imgs)


def test_two_planted_families_are_each_one_set_and_no_set_mixes_styles(corpus):
    _, labels, x = corpus
    st = StyleConfig()
    sets = tight_sets(x, st.threshold, st.pair_min, st.min_set, st.max_sets_tried)
    found = {str(labels[m[0]]): set(m.tolist()) for m in sets}
    for m in sets:  # a set holding a family member holds nothing else (grey photos and grey faces may share one)
        kinds = set(labels[m].tolist())
        assert kinds & {"poster", "ink"} == set() or len(kinds) == 1, labels[m]
        s = set_stats(x, m)
        assert s["least_to_centre"] >= st.threshold and s["least_pair"] >= st.pair_min
    assert found["poster"] == set(np.flatnonzero(labels == "poster").tolist())
    assert found["ink"] == set(np.flatnonzero(labels == "ink").tolist())
    # what the tight sets replace: union-find at the same threshold chains unrelated images into one set
    chained = disjoint_sets(len(x), band_edges(x, st.threshold, 1.0))
    assert any(len(set(labels[m].tolist())) > 1 for m in chained)


def test_sets_are_disjoint_and_bounded():
    x = np.eye(4, dtype=np.float32)[[0, 0, 0, 1, 1, 1, 2]]
    sets = tight_sets(x, 0.9, 0.9, 3, 1)
    assert len(sets) == 1 and len(sets[0]) == 3
    sets = tight_sets(x, 0.9, 0.9, 3, 8)
    assert sorted(map(tuple, sets)) == [(0, 1, 2), (3, 4, 5)]  # the single third image is no set
    assert tight_sets(x[:2], 0.9, 0.9, 3, 8) == []


def _view(content, ref, target, style=None):
    return View(task="style_transfer_reference", instruction="Render {image1} in the style of {image2}.",
                inputs=[content, ref], masks=[None, None], target=target, labels={"style": style} if style else {})


def test_a_reference_of_another_style_fails_and_one_of_the_family_passes(corpus):
    imgs, labels, x = corpus
    cfg = SupervisionConfig()
    for style, other in (("poster", "ink"), ("ink", "poster")):
        for name in CONTENTS:
            content = _photo(name)
            target = stylize(style, content)
            ft = check_extractor()([target])[0]
            family = np.flatnonzero(labels == style)
            best = int(family[np.argmax(x[family] @ ft)])
            for label in (None, style):
                why, scores = style_reference_ok(_view(content, imgs[best], target, label), cfg)
                assert why is None and scores["reference_style_cos"] >= cfg.style_min_cosine, (style, name, scores)
                assert scores["reference_style_margin"] >= cfg.style_min_margin
            for kind in (other, "photo", "face", "gradient"):  # the nearest image of each other kind fails
                pool = np.flatnonzero(labels == kind)
                near = int(pool[np.argmax(x[pool] @ ft)])
                for label in (None, style):
                    why, scores = style_reference_ok(_view(content, imgs[near], target, label), cfg)
                    assert why == "style_mismatch", (style, name, kind, scores)


def test_a_set_is_in_the_bank_style_its_members_are_fixed_points_of(corpus):
    imgs, labels, _ = corpus
    sup = SupervisionConfig()
    args = (check_extractor(), sup.style_fixed_max_change, sup.style_fixed_min_cosine, StyleConfig().min_in_style_share)
    for style in ("poster", "ink"):
        fam = [imgs[i] for i in np.flatnonzero(labels == style)]
        name, ok = set_style(fam, *args)
        assert name == style and ok.all(), (style, name, ok)
        mixed = fam[:2] + [imgs[i] for i in np.flatnonzero(labels == "photo")[:4]]  # a family minority: no style
        assert set_style(mixed, *args)[0] is None
    for kind in ("photo", "face", "gradient"):  # photos re-rendered in any bank style change: no style
        name, ok = set_style([imgs[i] for i in np.flatnonzero(labels == kind)], *args)
        assert name is None and not ok.any(), (kind, name)


def test_a_photo_reference_for_a_stylised_photo_fails_though_its_features_are_near():
    """The demo's failure: a pencil / poster rendering of a photo and a photo reference at style cosine >= the
    minimum. The reference is no nearer the target than the content is, and no fixed point of the style."""
    cfg = SupervisionConfig()
    photos = {n: _photo(n) for n in PHOTOS}
    near = 0
    for style in ("pencil", "poster", "ink", "watercolour"):
        for name in ("chelsea", "coffee", "retina"):
            target = stylize(style, photos[name])
            for other in PHOTOS:
                if other == name:
                    continue
                why, scores = style_reference_ok(_view(photos[name], photos[other], target, style), cfg)
                assert why == "style_mismatch", (style, name, other, scores)
                assert (scores["reference_fixed_change"] > cfg.style_fixed_max_change
                        or scores["reference_fixed_cos"] < cfg.style_fixed_min_cosine), (style, name, other, scores)
                if scores["reference_style_cos"] >= cfg.style_min_cosine:  # the old check passed it
                    near += 1
                    assert scores["reference_style_margin"] < cfg.style_min_margin, (style, name, other, scores)
    assert near >= 1  # the planted case the cosine alone lets through


def test_in_style_measures_pixels_and_features():
    poster = stylize("poster", _quarter("chelsea", 0))
    ok, worst = in_style([poster, _photo("chelsea")], "poster", check_extractor(), 16.0, 0.95)
    assert ok.tolist() == [True, False] and worst["fixed_change"] > 16.0
