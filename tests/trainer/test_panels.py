import random

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from schemas.records import AceSample, ConditionUnit, Role
from tests.conftest import make_sample, png, random_image
from schemas.config import TrainConfig
from trainer.lcu import build_inputs
from trainer.panels import panel_options, panel_sizes, sample_panels


def test_panel_sizes_respect_the_token_cap():
    for form in ("canvas", "sequence"):
        for aspects in ([1.0], [0.5, 2.0], [1.0, 1.5, 0.7]):
            sizes = panel_sizes(aspects, 2048, form)
            assert sum(h * w for h, w in sizes) // 256 <= 2048
            assert all(h % 16 == 0 and w % 16 == 0 for h, w in sizes)
    assert panel_sizes([2.0], 2048, "canvas") == [(512, 1024)]  # the 2048-token 512x1024 canvas
    canvas = panel_sizes([1.0, 1.0], 2048, "canvas")
    assert canvas[0][0] == canvas[1][0]


def test_sample_panels_for_edit_kinds():
    rng = np.random.default_rng(0)
    local = make_sample(0, rng, with_mask=True)  # edit with mask: one target panel, condition = edit image
    p = sample_panels(local, 64, "canvas")
    assert len(p) == 1 and p[0].is_target and 0 < p[0].mask.mean() < 1
    glob = make_sample(1, rng)  # mask-less edit, released layout: in place under a full mask
    p = sample_panels(glob, 64, "canvas")
    assert len(p) == 1 and p[0].mask.min() == 1 and p[0].cond.abs().sum() > 0
    p = sample_panels(glob, 64, "canvas", layout="panel")  # the option: the source as a context panel
    assert [x.is_target for x in p] == [False, True] and p[0].mask.sum() == 0 and p[1].mask.min() == 1
    assert p[1].cond.abs().sum() == 0
    ref = make_sample(2, rng, task="reference_generation")
    p = sample_panels(ref, 64, "sequence")
    assert [x.is_target for x in p] == [False, False, True]
    t2i = AceSample(key="t", task="text_to_image", instruction="a cat",
                    target=ConditionUnit(role=Role.TARGET, image=png(random_image(rng))))
    p = sample_panels(t2i, 64, "canvas")
    assert len(p) == 1 and p[0].mask.min() == 1 and p[0].cond.abs().sum() == 0


def _released_latents(vae, image: torch.Tensor) -> torch.Tensor:
    """FLUX VAE mean latent, normalised and packed into 2x2 tokens: (1, L, 64)."""
    z = vae.encode(image[None]).latent_dist.mode()
    z = (z - vae.config.shift_factor) * vae.config.scaling_factor
    return rearrange(z, "b c (h p) (w q) -> b (h w) (c p q)", p=2, q=2)


def test_maskless_in_place_layout_equals_the_released_preprocessing(tiny_base):
    _, pipe = tiny_base
    h, w = 32, 48  # 2 x 3 tokens: no bucket crop, no resize at a 6-token cap
    yy, xx = np.mgrid[0:h, 0:w]
    edit = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1).astype(np.uint8)
    target = np.stack([255 - xx * 5, yy * 3, np.full_like(xx, 40)], -1).astype(np.uint8)
    sample = AceSample(key="k", task="general_editing", instruction="make it warmer",
                       units=[ConditionUnit(role=Role.EDIT, image=png(Image.fromarray(edit)))],
                       target=ConditionUnit(role=Role.TARGET, image=png(Image.fromarray(target))))
    # released ACEPlusDataset._get for a 0-ref, mask-less sample: edit_mask = all 255, image = x / 127.5 - 1,
    # src = src * (1 - REPAINTING_SCALE * mask) with REPAINTING_SCALE 0.5, the edit resized to the target size
    to_t = lambda a: torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1  # noqa: E731
    expected_image, expected_mask = to_t(target), torch.ones(1, h, w)
    expected_cond = to_t(edit) * (1 - 0.5 * expected_mask)
    scale = TrainConfig().repainting_scale("general_editing")
    assert scale == 0.5

    panels = sample_panels(sample, 6, "canvas")
    assert len(panels) == 1 and panels[0].is_target
    assert torch.allclose(panels[0].image, expected_image, atol=1e-6)
    assert torch.equal(panels[0].mask, expected_mask)
    inp = build_inputs(panels, "canvas", pipe.vae, scale)
    assert torch.allclose(inp.x0, _released_latents(pipe.vae, expected_image), atol=1e-5)
    assert torch.allclose(inp.cond[..., :64], _released_latents(pipe.vae, expected_cond), atol=1e-5)
    assert torch.equal(inp.cond[..., 64:], torch.ones(1, 6, 256))  # full mask, 8x8 unshuffled and packed
    hintless = build_inputs(panels, "canvas", pipe.vae, 1.0)  # what the old layout never fed: a blank
    assert not torch.allclose(hintless.cond[..., :64], inp.cond[..., :64], atol=1e-3)


def _masked_pair(scale_region_differs: bool):
    """Two local-edit samples equal everywhere except (optionally) under the edit mask."""
    rng = np.random.default_rng(5)
    edit = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 4:20] = 255
    other = edit.copy()
    if scale_region_differs:
        other[mask > 0] = 255 - other[mask > 0]
    target = png(random_image(rng, 32, 32))
    return [AceSample(key=f"k{i}", task="control_depth", instruction="x",
                      units=[ConditionUnit(role=Role.EDIT, image=png(Image.fromarray(e)),
                                           mask=png(Image.fromarray(mask)))],
                      target=ConditionUnit(role=Role.TARGET, image=target)) for i, e in enumerate((edit, other))]


def test_samples_differing_under_the_mask_give_different_conditions_below_scale_one(tiny_base):
    _, pipe = tiny_base
    a, b = (sample_panels(s, 4, "canvas") for s in _masked_pair(True))
    for scale in (0.0, 0.5):
        ca, cb = (build_inputs(p, "canvas", pipe.vae, scale).cond for p in (a, b))
        assert (ca[..., :64] - cb[..., :64]).abs().max() > 1e-2, scale  # the hint reaches the model
        assert torch.equal(ca[..., 64:], cb[..., 64:])
    ca, cb = (build_inputs(p, "canvas", pipe.vae, 1.0).cond for p in (a, b))
    assert torch.equal(ca, cb)  # scale 1: the masked region is blank whatever it held
    assert TrainConfig().repainting_scale("control_depth") == 0.0  # control maps keep their hint
    same_a, same_b = (sample_panels(s, 4, "canvas") for s in _masked_pair(False))
    assert torch.equal(build_inputs(same_a, "canvas", pipe.vae, 0.5).cond,
                       build_inputs(same_b, "canvas", pipe.vae, 0.5).cond)


def test_repainting_scales_per_task_defaults_and_overrides():
    cfg = TrainConfig()
    expected = {"inpainting": 1.0, "outpainting": 1.0, "object_removal": 1.0, "object_addition": 1.0,
                "text_removal": 1.0, "reference_generation": 1.0, "control_canny": 0.0, "control_multi": 0.0,
                "general_editing": 0.5, "style_editing": 0.5, "analysis_depth": 0.5}
    assert {t: cfg.repainting_scale(t) for t in expected} == expected
    cfg = TrainConfig(repainting_scales={"inpainting": 0.25})
    assert cfg.repainting_scale("inpainting") == 0.25 and cfg.repainting_scale("outpainting") == 1.0
    with pytest.raises(ValueError):
        TrainConfig(repainting_scales={"inpainting": 1.5})
    with pytest.raises(ValueError):
        TrainConfig(repainting_scales={"no_such_task": 0.5})
    with pytest.raises(ValueError):
        TrainConfig(maskless_layout="side")


def test_reference_scale_and_pad():
    rng = np.random.default_rng(3)
    sample = make_sample(0, rng, task="reference_generation")
    plain = sample_panels(sample, 256, "canvas")
    h, w = plain[0].image.shape[-2:]
    heights = set()
    for seed in range(12):
        p = sample_panels(sample, 256, "canvas", ref_rng=random.Random(seed))
        ref = p[0]
        assert not ref.is_target and ref.image.shape[-2] == h and torch.equal(ref.cond, ref.image)
        pw = ref.image.shape[-1]
        assert pw % 16 == 0 and pw <= w and ref.mask.shape[-2:] == (h, pw) and ref.mask.sum() == 0
        rows = (ref.image.abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
        top, rh = int(rows.min()), int(rows.max()) - int(rows.min()) + 1
        assert h // 3 <= rh <= h
        assert abs(top - (h - rh - top)) <= 1  # centred: equal bands above and below (odd rest: 1 more below)
        assert ref.image[:, :top].abs().sum() == 0 and ref.image[:, top + rh:].abs().sum() == 0
        assert torch.equal(p[-1].image, plain[-1].image)  # the target panel is untouched
        heights.add(rh)
    assert len(heights) > 3  # drawn, not fixed
    cfg = TrainConfig(seed=1)
    a, b = panel_options(cfg, sample)["ref_rng"], panel_options(cfg, sample)["ref_rng"]
    assert a.random() == b.random()  # the same draw for the same (seed, key): resumable
    assert panel_options(TrainConfig(ref_scale_pad=False), sample)["ref_rng"] is None
    assert panel_options(cfg, sample)["repainting_scale"] == 1.0


def test_a_maskless_edit_that_scale_one_would_blank_stays_visible_as_context():
    rng = np.random.default_rng(4)
    sample = make_sample(0, rng, task="reference_generation")  # mask-less edit image + reference, scale 1.0
    p = sample_panels(sample, 128, "canvas")
    assert [x.is_target for x in p] == [False, False, True] and p[-1].cond.abs().sum() == 0
    p = sample_panels(sample, 128, "canvas", repainting_scale=0.5)  # with a hint it stays in place
    assert [x.is_target for x in p] == [False, True] and p[-1].cond.abs().sum() > 0
