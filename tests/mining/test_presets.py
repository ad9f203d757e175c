import numpy as np
import pytest

from mining.presets import PRESETS, largest_set, preset, series_groups
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


def test_series_groups_take_three_to_eight_inputs_and_one_target():
    members = np.arange(100, 140)
    groups = series_groups(members, np.random.default_rng(0))
    used = []
    for inputs, target in groups:
        assert 3 <= len(inputs) <= 8 and target not in inputs
        used += [*inputs.tolist(), target]
    assert len(used) == len(set(used)) and set(used) <= set(members.tolist())
    assert len(members) - len(used) < 4  # only a remainder too small for a group is left
    again = series_groups(members, np.random.default_rng(0))
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(groups, again))
    assert series_groups(np.arange(3), np.random.default_rng(0)) == []


def test_largest_set():
    sets = [np.array([5, 6]), np.array([1, 2, 3]), np.array([0, 9, 10])]
    assert largest_set(sets)[0].tolist() == [0, 9, 10] and largest_set([]) == []
