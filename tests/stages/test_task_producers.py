"""Every task of the taxonomy has a producer: a registered stage that declares it, or a mining preset on the
image features the mining flow computes."""
from mining.pairs.presets import PRESETS
from schemas.taxonomy import TASKS
from stages.registry import STAGES


def test_every_task_of_the_taxonomy_has_a_producer():
    made = {t for cls in STAGES for t in cls.produces}
    mined = {p.task for p in PRESETS.values() if p.features == "image"}
    assert sorted(set(TASKS) - made - mined) == []
    # the tasks only clustering pairs make, and the presets that make them
    assert sorted(set(TASKS) - made) == ["general_editing", "object_editing", "series_generation", "text_editing"]
    assert {PRESETS[n].task for n in ("object_editing", "text_editing")} == {"object_editing", "text_editing"}
    assert all(PRESETS[n].requires_classifier for n in ("object_editing", "text_editing"))
    # Table 4 of ACE: the second-level bounds of the clustering presets
    bounds = {n: (p.check_lo, p.check_hi) for n, p in PRESETS.items() if p.check == "classifier"}
    assert bounds == {"general_editing": (0.9, 1.0), "object_editing": (0.5, None), "text_editing": (None, 0.99),
                      "reference_generation": (0.8, 0.95)}
