import pytest
import torch

from trainer.lcu import Panel, build_inputs, collate
from trainer.packing import fill_condition, image_ids, pack, encode


def _panel(h, w, target, seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, h, w, generator=g) * 2 - 1
    mask = torch.ones(1, h, w) if target else torch.zeros(1, h, w)
    return Panel(img, img if not target else torch.zeros_like(img), mask, target)


def test_single_panel_is_the_same_in_both_forms(tiny_base):
    _, pipe = tiny_base
    p = [_panel(32, 48, True, 0)]
    a, b = build_inputs(p, "canvas", pipe.vae), build_inputs(p, "sequence", pipe.vae)
    for f in ("x0", "cond", "img_ids", "is_target"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.tokens == 6 and a.is_target.all()


def test_canvas_puts_context_left_and_matches_one_fill_image(tiny_base):
    _, pipe = tiny_base
    ref, tgt = _panel(32, 32, False, 1), _panel(32, 48, True, 2)
    inp = build_inputs([ref, tgt], "canvas", pipe.vae)
    canvas = torch.cat([ref.image, tgt.image], -1)[None]
    cond = torch.cat([ref.cond, tgt.cond], -1)[None]
    mask = torch.cat([ref.mask, tgt.mask], -1)[None]
    assert torch.allclose(inp.x0, pack(encode(pipe.vae, canvas)), atol=1e-6)
    assert torch.allclose(inp.cond, fill_condition(pipe.vae, cond, mask), atol=1e-6)
    assert torch.equal(inp.img_ids, image_ids(4, 10))
    grid = inp.is_target.reshape(2, 5)
    assert not grid[:, :2].any() and grid[:, 2:].all()  # 2 reference columns, 3 target columns
    assert torch.equal(inp.cond[0, ~inp.is_target, 64:], torch.zeros(4, 256))  # mask 0 over the reference


def test_sequence_keeps_units_apart(tiny_base):
    _, pipe = tiny_base
    ref, tgt = _panel(32, 32, False, 1), _panel(32, 48, True, 2)
    inp = build_inputs([ref, tgt], "sequence", pipe.vae)
    assert inp.tokens == 6 + 4
    assert inp.is_target[:6].all() and not inp.is_target[6:].any()  # target unit first
    assert (inp.img_ids[:6, 0] == 0).all() and (inp.img_ids[6:, 0] == 1).all()
    alone = build_inputs([Panel(ref.image, ref.cond, ref.mask, True)], "sequence", pipe.vae)
    assert torch.allclose(inp.x0[:, 6:], alone.x0, atol=1e-6)  # each unit packed on its own


def test_bad_layouts_are_refused(tiny_base):
    _, pipe = tiny_base
    with pytest.raises(ValueError, match="exactly one target"):
        build_inputs([_panel(32, 32, False, 0)], "canvas", pipe.vae)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_inputs([_panel(30, 32, True, 0)], "canvas", pipe.vae)
    with pytest.raises(ValueError, match="share a height"):
        build_inputs([_panel(48, 32, False, 0), _panel(32, 32, True, 1)], "canvas", pipe.vae)
    with pytest.raises(ValueError, match="unknown LCU"):
        build_inputs([_panel(32, 32, True, 0)], "grid", pipe.vae)
    a = build_inputs([_panel(32, 32, True, 0)], "canvas", pipe.vae)
    b = build_inputs([_panel(32, 48, True, 0)], "canvas", pipe.vae)
    with pytest.raises(ValueError, match="share their layout"):
        collate([a, b])
    assert collate([a, a]).x0.shape[0] == 2
