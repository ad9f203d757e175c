import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mining.models.embedders import SIGLIP_FILES, MissingModelError, siglip_dir
from mining.objects.names import PROMPT, GenericNamer, SiglipNamer, make_namer, object_crop
from mining.instructions.synthesis import synth_instruction

# a tiny open_clip model with SigLIP's sigmoid head (a logit bias); the CLIP BPE of the wheel as its tokenizer
TINY = {
    "model_cfg": {
        "embed_dim": 32, "init_logit_bias": -2.0,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                       "resize_mode": "squash"},
}
VOCAB = ("cat", "apple", "rocket")


def save_tiny_siglip(models_dir, name="tiny"):
    import open_clip

    folder = siglip_dir(models_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIGLIP_FILES[0]).write_text(json.dumps(TINY))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / SIGLIP_FILES[1]))
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def _crops(n=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 30 + 5 * i, 3), dtype=np.uint8)) for i in range(n)]


def test_probabilities_match_open_clips_own_image_text_scores(tmp_path):
    model, preprocess, tokenizer = save_tiny_siglip(tmp_path)
    namer = SiglipNamer(tmp_path, model_name="tiny", vocabulary=VOCAB, device="cpu")
    got = namer.probabilities(_crops())
    with torch.no_grad():  # the bare library calls, independently of the wrapper
        img = model.encode_image(torch.stack([preprocess(c) for c in _crops()]), normalize=True)
        txt = model.encode_text(tokenizer([PROMPT.format(v) for v in VOCAB]), normalize=True)
        want = torch.sigmoid(model.logit_scale.exp() * img @ txt.T + model.logit_bias).numpy()
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert namer.version.startswith(namer.version.split("-")[0]) and namer.version != "unloaded"


def test_a_label_only_at_or_above_the_threshold(tmp_path):
    save_tiny_siglip(tmp_path)
    p = SiglipNamer(tmp_path, model_name="tiny", vocabulary=VOCAB, device="cpu").probabilities(_crops())
    best = p.max(axis=1)
    low = SiglipNamer(tmp_path, model_name="tiny", vocabulary=VOCAB, threshold=float(best.min()) / 2, device="cpu")
    assert [n for n, _ in low(_crops())] == [VOCAB[j] for j in p.argmax(axis=1)]
    high = SiglipNamer(tmp_path, model_name="tiny", vocabulary=VOCAB, threshold=min(1.0, float(best.max()) * 1.01),
                       device="cpu")
    assert [n for n, _ in high(_crops())] == [None, None, None]


def test_without_weights_auto_is_generic_and_siglip_names_the_missing_files(tmp_path):
    assert isinstance(make_namer("auto", tmp_path), GenericNamer)
    assert GenericNamer()(_crops(2)) == [(None, None), (None, None)]
    with pytest.raises(MissingModelError, match="open_clip_model.safetensors"):
        make_namer("siglip", tmp_path).setup()
    with pytest.raises(ValueError, match="unknown object namer"):
        make_namer("clip", tmp_path)


def test_object_crop_whitens_the_outside_and_pads_the_box():
    img = np.full((50, 60, 3), 7, np.uint8)
    obj = np.zeros((50, 60), bool)
    obj[10:30, 20:40] = True
    obj[10, 20] = False
    crop = np.asarray(object_crop(img, obj, pad=0.1))
    assert crop.shape == (24, 24, 3)  # 20x20 box + 2 px each side
    assert (crop[0] == 255).all() and (crop[2, 2] == 255).all()  # padding and the one unset pixel
    assert (crop[2, 3] == 7).all() and (crop[3, 3] == 7).all()
    with pytest.raises(ValueError):
        object_crop(img, np.zeros((50, 60), bool))


def test_named_instructions_use_the_label_and_text_guided_needs_one():
    assert "the cat" in synth_instruction("object_removal", "k1", 0, object_name="cat")
    add = synth_instruction("object_addition", "k1", 0, object_name="apple")
    assert "an apple" in add and "{image}" in add
    assert "a rocket" in synth_instruction("inpainting_text_guided", "k2", 0, object_name="rocket")
    generic = synth_instruction("object_removal", "k1", 0)
    assert "cat" not in generic and "{image}" in generic
    with pytest.raises(ValueError, match="without an object name"):
        synth_instruction("inpainting_text_guided", "k2", 0)
