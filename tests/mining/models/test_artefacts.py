import numpy as np
import pytest
import torch
from PIL import Image

from mining.models.artefacts import ArtefactClassifier, ArtefactHead, artefact_path, save_artefact_head, train_artefact_head
from mining.models.embedders import MissingModelError, SiglipEmbedder
from tests.mining.objects.test_names import save_tiny_siglip


def _images(kind, n=6, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(n)]
    return [np.full((48, 48, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(n)]


def test_a_trained_head_round_trips_and_separates_its_classes(tmp_path):
    save_tiny_siglip(tmp_path, "ViT-B-16-SigLIP")
    emb = SiglipEmbedder(tmp_path, device="cpu")
    imgs = _images("noise", 16) + _images("flat", 16)
    feats = emb([Image.fromarray(a) for a in imgs])
    labels = np.array([1] * 16 + [0] * 16)
    head = train_artefact_head(feats, labels, epochs=300)
    save_artefact_head(head, artefact_path(tmp_path, "h.safetensors"), emb.name)
    clf = ArtefactClassifier(tmp_path, "h.safetensors", SiglipEmbedder(tmp_path, device="cpu"))
    p = clf(_images("noise", 4, seed=5) + _images("flat", 4, seed=5))  # unseen images of both kinds
    assert p[:4].min() > p[4:].max()
    with torch.no_grad():  # the loaded head is the saved one
        np.testing.assert_allclose(clf(imgs), torch.sigmoid(head(torch.from_numpy(feats))).numpy(), rtol=1e-5)
    assert clf.name == "artefact-classifier:h" and clf.version != "unloaded"


def test_missing_foreign_or_mismatched_files_are_clear_errors(tmp_path):
    save_tiny_siglip(tmp_path, "ViT-B-16-SigLIP")
    with pytest.raises(MissingModelError, match="artefact classifier not found"):
        ArtefactClassifier(tmp_path, "absent.safetensors").setup()
    save_artefact_head(ArtefactHead(32), artefact_path(tmp_path, "other.safetensors"), "siglip:ViT-L")
    with pytest.raises(ValueError, match="trained on siglip:ViT-L"):
        ArtefactClassifier(tmp_path, "other.safetensors").setup()
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(artefact_path(tmp_path, "foreign.safetensors")))
    with pytest.raises(ValueError, match="not an aceforge artefact classifier"):
        ArtefactClassifier(tmp_path, "foreign.safetensors").setup()
    with pytest.raises(ValueError, match="both classes"):
        train_artefact_head(np.zeros((4, 8)), np.zeros(4))
