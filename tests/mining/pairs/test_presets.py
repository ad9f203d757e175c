import numpy as np
import pytest

from mining.pairs.presets import PRESETS, largest_set, preset
from schemas.taxonomy import task_spec


def test_table_four_values():
    assert (preset("general_editing").check_lo, preset("general_editing").check_hi) == (0.9, 1.0)
    assert preset("facial_misaligned").band == (0.8, 0.9) and preset("facial_misaligned").features == "face"
    assert (preset("object_editing").check_lo, preset("object_editing").check_hi) == (0.5, None)
    assert (preset("text_editing").check_lo, preset("text_editing").check_hi) == (None, 0.99)
    assert (preset("reference_generation").check_lo, preset("reference_generation").check_hi) == (0.8, 0.95)
    assert preset("style_editing").band == (0.65, 1.0) and preset("style_editing").keep == "largest_set"
    for p in PRESETS.values():
        task_spec(p.task)
    assert preset("object_editing").passes(0.5) and not preset("object_editing").passes(0.49)
    assert preset("text_editing").passes(0.0) and not preset("text_editing").passes(0.995)
    with pytest.raises(ValueError, match="known: general_editing"):
        preset("nope")


def test_largest_set():
    sets = [np.array([5, 6]), np.array([1, 2, 3]), np.array([0, 9, 10])]
    assert largest_set(sets)[0].tolist() == [0, 9, 10] and largest_set([]) == []
