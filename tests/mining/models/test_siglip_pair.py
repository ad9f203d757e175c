"""The SigLIP pair scorer loads both towers from the real file layout (a tiny random-initialised open_clip
model here) and computes the similarity and the instruction direction from that model's own embeddings."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mining.models.embedders import SIGLIP_FILES, MissingModelError, siglip_dir
from mining.models.siglip_pair import SiglipPairScorer
from mining.quality import identity, make_pair_scorer
from tests.mining.models.test_embedders import TINY


@pytest.fixture
def tiny(tmp_path):
    import open_clip

    folder = siglip_dir(tmp_path, "tiny")
    folder.mkdir(parents=True)
    cfg = json.loads(json.dumps(TINY))
    cfg["model_cfg"]["text_cfg"]["vocab_size"] = 49408  # open_clip's default tokenizer (CLIP BPE) ids
    (folder / SIGLIP_FILES[0]).write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / SIGLIP_FILES[1]))
    return tmp_path, model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def test_pair_scores_are_the_models_own_cosines(tiny):
    models_dir, model, preprocess, tok = tiny
    rng = np.random.default_rng(0)
    a, b = (Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(2))
    torch.manual_seed(99)  # a re-initialised model would differ from the saved one
    got = SiglipPairScorer(models_dir, model_name="tiny", device="cpu")(a, b, "make {image} brighter")
    with torch.no_grad():
        e, t = model.encode_image(torch.stack([preprocess(a), preprocess(b)]), normalize=True).numpy()
        txt = model.encode_text(tok(["make the image brighter", ""]), normalize=True).numpy()
    d_img, d_txt = t - e, txt[0] - txt[1]
    assert got["siglip_similarity"] == pytest.approx(float(e @ t), abs=1e-4)
    assert got["clip_direction"] == pytest.approx(float(d_img @ d_txt / np.linalg.norm(d_img) / np.linalg.norm(d_txt)),
                                                  abs=1e-4)


def test_without_weights_there_is_no_scorer_and_the_identity_says_so(tmp_path):
    assert make_pair_scorer(str(tmp_path)) is None and identity(str(tmp_path))["pair_model"] == "absent"
    with pytest.raises(MissingModelError, match="open_clip_model.safetensors"):
        SiglipPairScorer(tmp_path).setup()
