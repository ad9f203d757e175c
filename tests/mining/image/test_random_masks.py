import numpy as np

from mining.image.random_masks import outpaint_mask, repaint_mask
from mining.instructions.synthesis import TEMPLATES, synth_instruction


def test_repaint_masks_land_in_the_area_range_and_repeat_with_the_seed():
    for seed in range(12):
        m, kind = repaint_mask(60, 80, np.random.default_rng(seed), (0.05, 0.35))
        assert m is not None and 0.05 <= m.mean() <= 0.35 and kind in ("strokes", "boxes", "strokes+boxes")
        again, _ = repaint_mask(60, 80, np.random.default_rng(seed), (0.05, 0.35))
        assert np.array_equal(m, again)


def test_outpaint_masks_are_a_band_on_their_side():
    sides = set()
    for seed in range(16):
        m, side, e = outpaint_mask(50, 70, np.random.default_rng(seed), (0.2, 0.3))
        sides.add(side)
        edge = {"left": m[:, 0], "right": m[:, -1], "top": m[0], "bottom": m[-1]}[side]
        assert edge.all() and 0.18 <= m.mean() <= 0.32
    assert sides == {"left", "right", "top", "bottom"}


def test_instructions_vary_by_sample_name_their_image_and_repeat():
    for task in TEMPLATES:
        got = {synth_instruction(task, f"k{i}", 0, side="left") for i in range(40)}
        names = ("{image1}", "{image2}") if task == "layer_fusion" else ("{image}",)
        rest = [g.replace(names[0], "").replace(names[-1], "") for g in got]
        assert len(got) > 1 and all(n in g for g in got for n in names) and all("{" not in r for r in rest)
    assert synth_instruction("outpainting", "k", 3, side="top") == synth_instruction("outpainting", "k", 3, side="top")
