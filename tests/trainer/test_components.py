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


def test_image_identifiers_are_single_t5_tokens(tiny_base):
    from transformers import T5EncoderModel

    from trainer.components import IDENTIFIERS, add_identifiers, build_tiny_pipeline, tiny_t5_tokenizer

    folder, _ = tiny_base
    pipe = load_pipeline(folder)
    tok = pipe.tokenizer_2
    # the released ADDED_IDENTIFIER list, in its order: consecutive ids after the base vocabulary
    released = ['<img>', '{image}', '{caption}', '{mask}', '{ref_image}'] + [f"{{image{i}}}" for i in range(1, 10)]
    assert list(IDENTIFIERS) == released
    ids = tok.convert_tokens_to_ids(released)
    assert ids == list(range(ids[0], ids[0] + len(released))) and ids[-1] == len(tok) - 1
    for ident in ("{image}", "{image3}", "{ref_image}"):
        pieces = tok.convert_ids_to_tokens(tok(f"make {ident} red").input_ids)
        assert pieces.count(ident) == 1 and not any(p in ("{", "}", "▁{") for p in pieces)
    assert pipe.text_encoder_2.get_input_embeddings().weight.shape[0] >= len(tok)
    embeds, _, _ = pipe.encode_prompt(prompt=["put {image1} left of {image2}"], prompt_2=None,
                                      max_sequence_length=16)
    assert torch.isfinite(embeds).all()

    # a base saved without them (an older tiny base) gains them, with zero embedding rows for the new ids
    old = build_tiny_pipeline(seed=0)
    old.tokenizer_2 = tiny_t5_tokenizer()
    old.text_encoder_2 = T5EncoderModel(old.text_encoder_2.config.__class__(
        **{**old.text_encoder_2.config.to_dict(), "vocab_size": len(old.tokenizer_2)}))
    rows = len(old.tokenizer_2)
    add_identifiers(old)
    emb = old.text_encoder_2.get_input_embeddings().weight
    assert emb.shape[0] == rows + len(IDENTIFIERS) and not emb[rows:].any()
