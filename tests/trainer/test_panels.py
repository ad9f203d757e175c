import numpy as np

from schemas.records import AceSample, ConditionUnit, Role
from tests.conftest import make_sample, png, random_image
from trainer.panels import panel_sizes, sample_panels


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
    glob = make_sample(1, rng)  # mask-less edit: the source becomes a visible context panel
    p = sample_panels(glob, 64, "canvas")
    assert [x.is_target for x in p] == [False, True] and p[0].mask.sum() == 0 and p[1].mask.min() == 1
    ref = make_sample(2, rng, task="reference_generation")
    p = sample_panels(ref, 64, "sequence")
    assert [x.is_target for x in p] == [False, False, True]
    t2i = AceSample(key="t", task="text_to_image", instruction="a cat",
                    target=ConditionUnit(role=Role.TARGET, image=png(random_image(rng))))
    p = sample_panels(t2i, 64, "canvas")
    assert len(p) == 1 and p[0].mask.min() == 1 and p[0].cond.abs().sum() == 0
