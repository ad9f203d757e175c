import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mining.models.embedders import MissingModelError
from mining.faces.face import FACE_SIZE, FaceEmbedder, face_model_paths, face_similarity, sha256_file


class TinyFaceNet(nn.Module):
    """Same interface as ArcFace recognition models: (n, 3, 112, 112) in [-1, 1] -> (n, 16)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4)
        self.fc = nn.Linear(8 * 4 * 4, 16)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4), 1))


@pytest.fixture
def face_models(tmp_path):
    torch.manual_seed(0)
    net = TinyFaceNet().eval()
    pt, sha = face_model_paths(tmp_path)
    pt.parent.mkdir(parents=True)
    torch.jit.trace(net, torch.zeros(1, 3, FACE_SIZE, FACE_SIZE)).save(str(pt))
    sha.write_text(sha256_file(pt) + "  arcface.pt\n")
    return tmp_path, net


def _faces(seed):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (130, 120, 3), dtype=np.uint8)) for _ in range(3)]


def test_loads_pinned_model_and_matches_direct_inference(face_models):
    models_dir, net = face_models
    emb = FaceEmbedder(models_dir, device="cpu")
    out = emb(_faces(0))
    assert out.shape == (3, 16) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    arr = np.stack([np.asarray(f.resize((112, 112), Image.Resampling.BILINEAR), np.float32) for f in _faces(0)])
    with torch.no_grad():
        ref = net(torch.from_numpy((arr - 127.5) / 128).permute(0, 3, 1, 2)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(out, ref, atol=1e-5)
    sims = face_similarity(out, emb(_faces(0)))
    assert np.allclose(sims, 1, atol=1e-5)


def test_checksum_mismatch_is_refused(face_models):
    models_dir, _ = face_models
    _, sha = face_model_paths(models_dir)
    sha.write_text("0" * 64)
    with pytest.raises(ValueError, match="refusing to load"):
        FaceEmbedder(models_dir).setup()


def test_missing_model_names_both_files(tmp_path):
    with pytest.raises(MissingModelError, match=r"arcface\.pt.*arcface\.sha256"):
        FaceEmbedder(tmp_path).setup()
