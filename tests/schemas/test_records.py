import pytest
from pydantic import ValidationError

from schemas.records import AceSample, ConditionUnit, Role, instruction_indicators


def _unit(role=Role.EDIT, data=b"\x89PNG fake"):
    return ConditionUnit(role=role, image=data)


def test_instruction_indicators_in_order():
    assert instruction_indicators("put {image2} into {image1}, keep {image}") == ["image2", "image1", "image"]


def test_indicator_beyond_inputs_is_rejected():
    with pytest.raises(ValidationError, match=r"names \{image2\} but the sample has 1 inputs"):
        AceSample(key="k", task="general_editing", instruction="mix {image1} and {image2}",
                  units=[_unit()], target=_unit(Role.TARGET))


def test_zero_ref_task_refuses_references():
    with pytest.raises(ValidationError, match="0-ref"):
        AceSample(key="k", task="general_editing", instruction="x",
                  units=[_unit(Role.REFERENCE)], target=_unit(Role.TARGET))


def test_target_role_and_input_count_are_checked():
    with pytest.raises(ValidationError, match="role 'target'"):
        AceSample(key="k", task="general_editing", instruction="x", units=[_unit()], target=_unit(Role.EDIT))
    with pytest.raises(ValidationError, match="takes 3-8 inputs"):
        AceSample(key="k", task="series_generation", instruction="x", units=[_unit()], target=_unit(Role.TARGET))
    with pytest.raises(ValidationError, match="unknown task"):
        AceSample(key="k", task="nope", instruction="x", units=[_unit()], target=_unit(Role.TARGET))


def test_unknown_image_ext_rejected():
    with pytest.raises(ValidationError, match="image_ext"):
        ConditionUnit(role=Role.EDIT, image=b"x", image_ext="gif")
