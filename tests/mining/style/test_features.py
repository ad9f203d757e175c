import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from mining.pairs.band import band_edges, disjoint_sets
from mining.pairs.presets import largest_set
from mining.style.features import (RandConvStyle, VggStyle, gram_vector, make_style_extractor, save_vgg_features,
                          vgg16_features, vgg_path)
from mining.style.stylize import STYLES, stylize
from schemas.config import StyleConfig
from stages.corpus.demo_corpus import STYLE_FAMILY, style_family

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "coins")


def _photo(name: str, side: int = 112) -> np.ndarray:
    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    im.thumbnail((side, side))
    return np.asarray(im)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real photos and the demo's poster-style family (quarter crops of other photos, stylised)."""
    out = tmp_path_factory.mktemp("styles")
    style_family(out, 112)
    family = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.rglob("*.png"))]
    assert len(family) == len(STYLE_FAMILY)
    return [_photo(n) for n in PHOTOS], family


def test_a_style_family_is_closer_to_itself_than_to_photos_and_is_the_largest_set(images):
    photos, family = images
    x = RandConvStyle(seed=0)(family + photos)
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    s = x @ x.T
    n = len(family)
    within = s[:n, :n][np.triu_indices(n, 1)]
    across = s[:n, n:]
    assert within.mean() > across.mean() + 0.1
    sets = largest_set(disjoint_sets(len(x), band_edges(x, StyleConfig().threshold, 1.0)))
    assert sets and set(sets[0].tolist()) <= set(range(n)) and len(sets[0]) >= StyleConfig().min_set


def test_the_same_content_in_two_styles_is_further_apart_than_two_contents_in_one_style(images):
    photos, _ = images
    ex = RandConvStyle(seed=0)
    a, b = photos[0], photos[2]
    x = ex([stylize("poster", a), stylize("poster", b), stylize("pencil", a)])
    assert x[0] @ x[1] > x[0] @ x[2]


def test_features_are_deterministic_and_bad_input_is_a_clear_error(images):
    photos, _ = images
    x1 = RandConvStyle(seed=3)(photos[:2])
    x2 = RandConvStyle(seed=3)(photos[:2])
    assert np.array_equal(x1, x2)
    assert not np.allclose(x1, RandConvStyle(seed=4)(photos[:2]))  # the seed is the net
    with pytest.raises(ValueError, match="RGB"):
        RandConvStyle()([photos[0][..., 0]])


def test_gram_vector_is_the_normed_channel_covariance():
    act = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    f = act.reshape(3, -1).numpy().astype(np.float64)
    cov = np.cov(f, bias=True)
    want = cov[np.triu_indices(3)]
    want = np.sign(want) * np.sqrt(np.abs(want))
    assert np.allclose(gram_vector(act).numpy(), want / np.linalg.norm(want), atol=1e-5)


def test_every_bank_style_keeps_the_size_and_changes_the_image(images):
    photos, _ = images
    for name in STYLES:
        out = stylize(name, photos[1])
        assert out.shape == photos[1].shape and out.dtype == np.uint8 and not np.array_equal(out, photos[1])
    with pytest.raises(ValueError, match="unknown style"):
        stylize("cubism", photos[1])


def test_vgg_loader_reads_a_random_vgg16_back_with_its_pinned_digest(tmp_path, images):
    from torchvision.models import vgg16

    photos, _ = images
    torch.manual_seed(0)
    net = vgg16_features().eval()
    assert [k for k in net.state_dict()] == [k.removeprefix("features.") for k in vgg16().state_dict()
                                             if k.startswith("features.")]  # torchvision's own layout
    path = vgg_path(tmp_path)
    digest = save_vgg_features(net, path)
    ex = make_style_extractor("auto", tmp_path, sha256=digest)
    assert isinstance(ex, VggStyle) and ex.name == "style-gram-vgg16"
    ex.setup()
    for (k, v), (k2, v2) in zip(net.state_dict().items(), ex.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = ex(photos[:2])
    assert x.shape[0] == 2 and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="does not match the pinned"):
        VggStyle(path, sha256="0" * 64).setup()
    with pytest.raises(ValueError, match="no pinned sha256"):
        VggStyle(path, sha256=None).setup()
    with pytest.raises(FileNotFoundError, match="vgg16.safetensors"):
        VggStyle(tmp_path / "none" / "vgg16.safetensors", sha256=digest).setup()
    assert make_style_extractor("auto", tmp_path).name == "style-gram-randconv"  # no pinned digest: offline
