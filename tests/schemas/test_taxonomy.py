import pytest

from schemas.taxonomy import TASKS, Family, Refs, task_spec, zero_ref_tasks


def test_every_ace_family_has_tasks():
    families = {t.family for t in TASKS.values()}
    assert families == set(Family)
    assert len(Family) == 9  # ACE's eight basic types + multi-turn / long-context


def test_zero_ref_split_matches_stage_one():
    zero = set(zero_ref_tasks())
    assert {"general_editing", "object_removal", "inpainting", "text_to_image", "analysis_canny"} <= zero
    assert not {"reference_generation", "series_generation", "layer_fusion", "multi_turn"} & zero
    for name in zero:
        assert TASKS[name].refs is Refs.ZERO and TASKS[name].max_inputs <= 1


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match="known tasks: .*general_editing"):
        task_spec("generl_editing")
