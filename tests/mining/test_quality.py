"""Quality scores of a sample: planted changes give the shares they were made with; no model, no model score."""

import io

import numpy as np
import pytest
from PIL import Image

from mining.quality import FIELDS, changed_shares, score_view, ssim_change, thumbnail_strip, visible_mask
from mining.supervision import View, view
from schemas.records import AceSample, ConditionUnit, Role
from tests.conftest import png


def _planted(seed: int = 0):
    """An edit, a mask over the left half, and a target changed on 50 of the mask's 32x16=512 pixels and on 8 of
    the 512 outside."""
    rng = np.random.default_rng(seed)
    edit = rng.integers(60, 190, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[:, :16] = True
    target = edit.copy()
    inside = np.argwhere(mask)[rng.choice(512, 50, replace=False)]
    outside = np.argwhere(~mask)[rng.choice(512, 8, replace=False)]
    for y, x in inside:
        target[y, x, 1] = 255 - target[y, x, 1] // 4  # a change far above the changed level
    for y, x in outside:
        target[y, x, 0] = 0
    return edit, mask, target


def test_changed_shares_are_the_planted_shares_inside_and_outside_the_mask():
    edit, mask, target = _planted()
    inside, outside = changed_shares(edit, target, mask)
    assert inside == pytest.approx(50 / 512) and outside == pytest.approx(8 / 512)
    everywhere, none = changed_shares(edit, target, None)
    assert everywhere == pytest.approx(58 / 1024) and none is None
    small = np.array(Image.fromarray(target).resize((16, 16)))  # another size: compared at the edit's size
    assert changed_shares(edit, small, mask)[0] > 0.5


def test_ssim_change_is_zero_for_an_identity_and_grows_with_the_change():
    edit, _, target = _planted()
    noisy = np.clip(edit.astype(int) + np.random.default_rng(1).integers(-80, 80, edit.shape), 0, 255).astype(np.uint8)
    assert ssim_change(edit, edit) == pytest.approx(0.0, abs=1e-9)
    assert 0 < ssim_change(edit, target) < ssim_change(edit, noisy)


def test_score_view_without_edit_or_model_writes_none_never_a_stand_in():
    edit, mask, target = _planted()
    v = View(task="inpainting", instruction="fill {image}", inputs=[edit], masks=[mask], target=target)
    got = score_view(v, has_edit=True)
    assert set(got) == set(FIELDS)
    assert got["changed_in_mask"] == pytest.approx(50 / 512, abs=1e-5) and got["changed_out_mask"] == pytest.approx(8 / 512, abs=1e-5)
    assert got["siglip_similarity"] is None and got["clip_direction"] is None
    assert all(x is None for x in score_view(v, has_edit=False).values())
    calls = []
    scored = score_view(v, True, lambda e, t, i: calls.append(i) or {"siglip_similarity": 0.5, "clip_direction": 0.1})
    assert calls == ["fill {image}"] and scored["siglip_similarity"] == 0.5


def test_a_group_label_mask_is_shown_visibly_in_the_thumbnail():
    labels = np.zeros((40, 40), np.uint8)
    labels[:, 20:30], labels[:, 30:] = 1, 2
    assert visible_mask(labels).max() == 255 and visible_mask(labels)[0, 25] == 128
    assert np.array_equal(visible_mask(labels * 0 + (labels > 0) * 255), (labels > 0) * 255)
    rng = np.random.default_rng(0)
    img = png(Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    s = AceSample(key="k", task="inpainting", instruction="fill {image}",
                  units=[ConditionUnit(role=Role.EDIT, image=img, mask=png(Image.fromarray(labels)))],
                  target=ConditionUnit(role=Role.TARGET, image=img))
    strip = np.asarray(Image.open(io.BytesIO(thumbnail_strip(s))).convert("L"))
    assert strip.shape[0] == 128
    mask_panel = strip[:, 128 + 4: 2 * 128 + 4]
    assert mask_panel[:, -20:].mean() > 200 and mask_panel[:, :50].mean() < 30  # label 2 white, background black
    assert view(s).mask is not None
