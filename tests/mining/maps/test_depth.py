import json

import cv2

import numpy as np
import pytest
import torch

from mining.maps.depth import DepthEstimator, depth_available, file_sha256
from mining.models.embedders import MissingModelError


def _tiny_dpt(folder):
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(0)
    cfg = DPTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 16, 32, 32],
                    fusion_hidden_size=16)
    model = DPTForDepthEstimation(cfg).eval()
    model.save_pretrained(folder)  # config.json + model.safetensors
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = _tiny_dpt(root / "depth" / "tiny-dpt")
    return root, model


def test_loaded_model_equals_the_saved_one_and_maps_have_the_source_size(models):
    root, model = models
    est = DepthEstimator(root, "tiny-dpt")
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = est(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and out.min() == 0 and out.max() == 255
    assert est.version == file_sha256(root / "depth" / "tiny-dpt" / "model.safetensors")[:12]
    loaded = {k: v for k, v in est._model.state_dict().items()}
    for k, v in model.state_dict().items():  # the weights saved are the weights loaded
        assert torch.equal(loaded[k], v), k
    # the in-memory model through the documented preprocessing: square input, the folder's mean/std
    x = (cv2.resize(img, (32, 32), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255 - 0.5) / 0.5
    with torch.inference_mode():
        ref = model(pixel_values=torch.from_numpy(x.transpose(2, 0, 1).copy())[None]).predicted_depth
        ref = torch.nn.functional.interpolate(ref[:, None], size=(40, 56), mode="bicubic")[0, 0].numpy()
    ref = (ref - ref.min()) / (ref.max() - ref.min()) * 255
    assert np.abs(out[..., 0].astype(float) - ref).max() <= 1.0
    assert np.array_equal(out, est(img))  # deterministic


def test_a_pinned_checksum_is_checked(models):
    root, _ = models
    with pytest.raises(ValueError, match="refusing"):
        DepthEstimator(root, "tiny-dpt", sha256="0" * 64).setup()


def test_absent_model_is_a_clear_error(tmp_path):
    est = DepthEstimator(tmp_path, "depth-anything-v2-small")
    assert not est.available() and not depth_available(tmp_path, "depth-anything-v2-small")
    with pytest.raises(MissingModelError, match="depth-anything-v2-small"):
        est.setup()
