import numpy as np

from mining.objects.mask_filters import filter_masks
from mining.objects.segment import Region
from schemas.config import MaskFilterConfig


def _box(y0, y1, x0, x1, shape=(100, 100)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_each_mask_is_kept_or_dropped_for_one_counted_reason():
    ring = _box(20, 60, 20, 60) & ~_box(23, 57, 23, 57)  # box fill 0.28
    regions = [
        Region(_box(30, 50, 30, 50), 0.9),  # kept
        Region(_box(32, 48, 32, 48), 0.8),  # inside the kept one: overlap
        Region(np.zeros((100, 100), bool), 0.7),  # empty
        Region(_box(0, 100, 0, 100), 0.6),  # area_high (and border)
        Region(_box(70, 74, 70, 74), 0.5),  # too_small
        Region(ring, 0.4),  # box_fill
        Region(_box(60, 75, 5, 95), 0.35),  # aspect 6
        Region(_box(80, 100, 40, 60), 0.3),  # touches the bottom edge
        Region(_box(5, 25, 70, 90), 0.01),  # low score
    ]
    res = filter_masks(regions, MaskFilterConfig(min_score=0.05))
    assert [r.score for r, _ in res.kept] == [0.9]
    assert res.drops == {"overlap": 1, "empty": 1, "area_high": 1, "too_small": 1, "box_fill": 1, "aspect": 1,
                         "border": 1, "low_score": 1}
    assert res.candidates == len(regions) == len(res.kept) + sum(res.drops.values())
    (_, stats), = res.kept
    assert stats.box == (30, 30, 50, 50) and stats.box_fill == 1.0 and abs(stats.area_frac - 0.04) < 1e-9
