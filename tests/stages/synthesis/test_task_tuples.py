"""The config's task tuples name what each synthesis stage makes, in the stages' own order."""

from schemas.config import (FACE_TASKS, MAP_TASKS, OBJECT_AND_REPAINT_TASKS, STYLE_AND_CHAIN_TASKS, SYNTH_TASKS,
                            TEXT_TASKS)
from schemas.taxonomy import TASKS
from stages.synthesis.chains import CHAIN_STAGE_TASKS
from stages.synthesis.objects import OBJECT_TASKS
from stages.synthesis.repaint import REPAINT_TASKS
from stages.synthesis.style import STYLE_TASKS


def test_config_tuples_are_the_stages_tuples():
    assert OBJECT_AND_REPAINT_TASKS == OBJECT_TASKS + REPAINT_TASKS
    assert STYLE_AND_CHAIN_TASKS == STYLE_TASKS + CHAIN_STAGE_TASKS
    assert SYNTH_TASKS == OBJECT_AND_REPAINT_TASKS + TEXT_TASKS + MAP_TASKS + STYLE_AND_CHAIN_TASKS


def test_every_synthesized_task_is_an_ace_task_and_named_once():
    assert len(set(SYNTH_TASKS + FACE_TASKS)) == len(SYNTH_TASKS + FACE_TASKS)
    assert set(SYNTH_TASKS + FACE_TASKS) <= set(TASKS)
