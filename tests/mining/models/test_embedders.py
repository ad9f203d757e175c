import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mining.models.embedders import (
    SIGLIP_FILES,
    MissingModelError,
    OfflineEmbedder,
    SiglipEmbedder,
    make_embedder,
    siglip_dir,
)

TINY = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                       "resize_mode": "squash"},
}


@pytest.fixture
def tiny_siglip(tmp_path):
    """A tiny open_clip model with random weights, saved the way the real SigLIP files are laid out."""
    import open_clip

    folder = siglip_dir(tmp_path, "tiny")
    folder.mkdir(parents=True)
    (folder / SIGLIP_FILES[0]).write_text(json.dumps(TINY))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / SIGLIP_FILES[1]))
    return tmp_path, model.eval(), preprocess


def _images(n=5):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (50 + 7 * i, 80, 3), dtype=np.uint8)) for i in range(n)]


def test_siglip_loads_saved_weights_through_the_real_path(tiny_siglip):
    models_dir, model, preprocess = tiny_siglip
    torch.manual_seed(123)  # a re-initialised model would now differ from the saved one
    emb = SiglipEmbedder(models_dir, model_name="tiny", device="cpu", batch_size=2)
    out = emb(_images())
    assert out.shape == (5, 32) and emb.dim == 32 and emb.version != "unloaded"
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    with torch.no_grad():
        ref = model.encode_image(torch.stack([preprocess(im) for im in _images()]), normalize=True).numpy()
    assert np.allclose(out, ref, atol=1e-5)
    again = SiglipEmbedder(models_dir, model_name="tiny", device="cpu", batch_size=2)(_images())
    assert np.array_equal(out, again)  # deterministic preprocessing and inference


def test_missing_siglip_names_the_files_and_auto_falls_back(tmp_path):
    emb = SiglipEmbedder(tmp_path)
    with pytest.raises(MissingModelError, match="open_clip_model.safetensors"):
        emb.setup()
    assert isinstance(make_embedder("auto", tmp_path), OfflineEmbedder)
    assert isinstance(make_embedder("siglip", tmp_path), SiglipEmbedder)
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("clip", tmp_path)


def test_offline_embedder_groups_a_photo_with_its_variants(demo_corpus):
    corpus, gt = demo_corpus
    emb = OfflineEmbedder()
    fams = {f: [Image.open(corpus / m["file"]) for m in ms] for f, ms in gt["families"].items()}
    vec = {f: emb(ims) for f, ims in fams.items()}
    for f, v in vec.items():
        assert v.shape[1] == emb.dim and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
        within = v[0] @ v[1:].T  # base against its own variants
        others = np.concatenate([v[0] @ w.T for g, w in vec.items() if g != f])
        assert np.median(within) > others.max(), f
    assert emb.name == "offline-dct-hist" and emb.band[0] > others.max() - 0.2
