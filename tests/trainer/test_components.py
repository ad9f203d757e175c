import numpy as np
import pytest
import torch
from PIL import Image

from trainer.components import clip_bpe, load_pipeline


def test_saved_base_loads_through_the_real_path_and_generates_the_same(tiny_base):
    folder, pipe = tiny_base
    loaded = load_pipeline(folder)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    kw = dict(prompt="make it red", image=img, mask_image=Image.new("L", (64, 64), 255), height=64, width=64,
              num_inference_steps=2, max_sequence_length=64)
    a = pipe(**kw, generator=torch.Generator().manual_seed(0)).images[0]
    b = loaded(**kw, generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert loaded.transformer.config.in_channels == 384 and loaded.vae.config.latent_channels == 16


def test_clip_vocabulary_and_refusals(tmp_path, tiny_base):
    vocab, merges = clip_bpe()
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407 and len(merges) == 48894
    with pytest.raises(FileNotFoundError, match="FLUX.1-Fill-dev"):
        load_pipeline(tmp_path / "nothing")
    folder, _ = tiny_base
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="refusing pickled weights"):
        load_pipeline(copy)
