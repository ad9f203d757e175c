import hashlib

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mining.models.embedders import MissingModelError
from mining.maps.hed import HedEdges, HedNet, hed_path
from mining.objects.segment import ChecksumError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random HED saved as a plain state dict where the released file goes, and its sha256."""
    models = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = HedNet().eval()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1))
    path = hed_path(models)
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    return models, net, hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_released_files_keys_and_shapes():
    sd = HedNet().state_dict()
    assert sd["norm"].shape == (1, 3, 1, 1)
    assert sd["block1.convs.0.weight"].shape == (64, 3, 3, 3) and "block1.convs.2.weight" not in sd
    assert sd["block5.convs.2.weight"].shape == (512, 512, 3, 3) and sd["block5.projection.weight"].shape == (1, 512, 1, 1)
    import torchvision

    vgg = sum(p.numel() for p in torchvision.models.vgg16(weights=None).features.parameters())
    sides = sum(c + 1 for c in (64, 128, 256, 512, 512))
    assert sum(v.numel() for v in sd.values()) == vgg + sides + 3  # VGG16's 13 convs + 5 side projections + norm


def test_loads_through_the_pinned_path_and_matches_the_module(saved):
    models, net, sha = saved
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    got = HedEdges(models, sha, device="cpu")(img)
    assert got.shape == (45, 70) and got.dtype == np.uint8
    with torch.no_grad():  # by hand: side outputs upsampled, sigmoid, mean
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] - net.norm
        sides, h = [], x
        for k in range(1, 6):
            block = getattr(net, f"block{k}")
            if k > 1:
                h = F.max_pool2d(h, 2, 2)
            for conv in block.convs:
                h = torch.relu(conv(h))
            sides.append(torch.sigmoid(F.interpolate(block.projection(h), size=(45, 70), mode="bilinear")))
        want = (torch.stack(sides).mean(0)[0, 0] * 255).round().numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_unpinned_altered_or_missing_weights_are_refused(saved, tmp_path):
    models, _, sha = saved
    with pytest.raises(ChecksumError, match="pins no digest"):
        HedEdges(models, None).setup()
    with pytest.raises(ChecksumError, match="not the pinned"):
        HedEdges(models, "0" * 64).setup()
    with pytest.raises(MissingModelError, match="ControlNetHED.pth"):
        HedEdges(tmp_path, sha).setup()
    with pytest.raises(ValueError, match="RGB uint8"):
        HedEdges(models, sha)(np.zeros((8, 8), np.uint8))
