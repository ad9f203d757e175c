import numpy as np
import pytest

from mining.models.embedders import MissingModelError
from mining.pairs.classifier import NO_CLASSIFIER, PairClassifier, save_pair_classifier, train_pair_classifier
from mining.pairs.presets import preset


def data(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d)).astype(np.float32)
    pos = a + 0.2 * rng.standard_normal((n, d)).astype(np.float32)
    neg = rng.standard_normal((n, d)).astype(np.float32)
    y = np.r_[np.ones(n), np.zeros(n)].astype(np.int64)
    return np.r_[a, a], np.r_[pos, neg], y


def test_trains_saves_loads_and_scores_the_same(tmp_path):
    a, b, y = data()
    head, rep = train_pair_classifier(a, b, y, epochs=150)
    assert rep.train_accuracy > 0.95
    path = tmp_path / "general.safetensors"
    save_pair_classifier(head, path, embedder="offline-dct-hist")
    clf = PairClassifier(path)
    ta, tb, ty = data(seed=1)  # held-out pairs
    s = clf.scores(ta, tb)
    assert clf.embedder == "offline-dct-hist" and clf.name == "pair-classifier:general"
    assert ((s > 0.5) == ty).mean() > 0.9
    assert np.allclose(s, PairClassifier(path).scores(tb, ta), atol=1e-6)  # order of the two images does not matter
    keep, scores = clf.keep(ta, tb, preset("general_editing"))
    assert np.array_equal(keep, (scores >= 0.9) & (scores <= 1.0))


def test_pass_through_invents_no_score():
    a, b, _ = data(n=10)
    clf = PairClassifier(None)
    keep, scores = clf.keep(a, b, preset("general_editing"))
    assert keep.all() and scores is None and clf.name == NO_CLASSIFIER


def test_bad_inputs(tmp_path):
    a, b, y = data(n=5)
    with pytest.raises(ValueError, match="0 or 1"):
        train_pair_classifier(a, b, y + 1)
    with pytest.raises(MissingModelError, match="train-pair-classifier"):
        PairClassifier(tmp_path / "nope.safetensors").setup()
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an aceforge pair classifier"):
        PairClassifier(tmp_path / "other.safetensors").setup()


def test_roc_auc_counts_ordered_pairs_and_ties_as_half():
    from mining.pairs.classifier import roc_auc

    y = np.array([1, 1, 0, 0])
    assert roc_auc(y, np.array([0.9, 0.8, 0.1, 0.2])) == 1.0
    assert roc_auc(y, np.array([0.1, 0.2, 0.9, 0.8])) == 0.0
    assert roc_auc(y, np.array([0.5, 0.9, 0.5, 0.1])) == 0.875  # 3 wins + a tie of 4 ordered pairs
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(3, int), np.zeros(3))


def test_heldout_split_keeps_each_class_on_both_sides_and_refuses_a_single_example():
    from mining.pairs.classifier import heldout_split

    y = np.r_[np.ones(20, int), np.zeros(8, int)]
    train, held = heldout_split(y, 0.25, seed=0)
    assert not set(train) & set(held) and len(train) + len(held) == len(y)
    assert (y[held] == 1).sum() == 5 and (y[held] == 0).sum() == 2
    with pytest.raises(ValueError, match="1 pairs labelled invalid"):
        heldout_split(np.r_[np.ones(5, int), 0], 0.25, seed=0)


def test_held_out_figures_travel_in_the_files_metadata(tmp_path):
    from mining.pairs.classifier import evaluate

    a, b, y = data(n=40, d=8)
    head, _ = train_pair_classifier(a, b, y, hidden=32, epochs=30)
    ta, tb, ty = data(n=40, d=8, seed=2)
    fig = evaluate(head, ta, tb, ty)
    assert fig["accuracy"] > 0.9 and fig["roc_auc"] > 0.95
    ra, rb, ry = data(n=40, d=8, seed=3)
    assert evaluate(head, ra, rb, 1 - ry)["roc_auc"] < 0.1  # swapped labels: the figure says so
    path = tmp_path / "object_editing.safetensors"
    save_pair_classifier(head, path, "offline-dct-hist", {"task": "object_editing", "heldout_roc_auc": "0.99"})
    clf = PairClassifier(path)
    clf.setup()
    assert clf.metadata["task"] == "object_editing" and clf.metadata["heldout_roc_auc"] == "0.99"
    assert clf.metadata["format"] == "aceforge-pair-head-1"
