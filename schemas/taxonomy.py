"""Task taxonomy: ACE's eight basic task types, their subtasks, and multi-turn.

Each task says whether it is 0-ref (at most one edit image and no reference image; the only kind
ACE++ stage 1 trains on) or N-ref (references or several inputs), and how many image indicators its
instruction may carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Family(str, Enum):
    """ACE's eight basic types, plus multi-turn / long-context."""

    TEXT_TO_IMAGE = "text_to_image"
    LOW_LEVEL_ANALYSIS = "low_level_analysis"
    CONTROLLABLE_GENERATION = "controllable_generation"
    SEMANTIC_EDITING = "semantic_editing"
    ELEMENT_EDITING = "element_editing"
    REPAINTING = "repainting"
    LAYER_EDITING = "layer_editing"
    REFERENCE_GENERATION = "reference_generation"
    MULTI_TURN = "multi_turn"


class Refs(str, Enum):
    ZERO = "0-ref"
    N = "N-ref"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: Family
    refs: Refs
    min_inputs: int  # condition units that carry an input image (edit + references)
    max_inputs: int
    description: str


_LOW_LEVEL_MAPS = (
    "segmentation", "depth", "pose", "mosaic", "degradation", "grayscale",
    "canny", "doodle", "contour", "scribble",
)


def _specs() -> list[TaskSpec]:
    s: list[TaskSpec] = [
        TaskSpec("text_to_image", Family.TEXT_TO_IMAGE, Refs.ZERO, 0, 0, "image from text alone"),
    ]
    for m in _LOW_LEVEL_MAPS:
        s.append(TaskSpec(f"analysis_{m}", Family.LOW_LEVEL_ANALYSIS, Refs.ZERO, 1, 1,
                          f"image -> {m} map, global or inside a mask"))
        s.append(TaskSpec(f"control_{m}", Family.CONTROLLABLE_GENERATION, Refs.ZERO, 1, 1,
                          f"{m} map -> image, global or inside a mask"))
    s += [
        TaskSpec("control_multi", Family.CONTROLLABLE_GENERATION, Refs.N, 2, 8,
                 "several maps, one per segment -> image"),
        TaskSpec("general_editing", Family.SEMANTIC_EDITING, Refs.ZERO, 1, 1,
                 "instruction edit of one image (clustering pairs, Table 4 0.9-1.0)"),
        TaskSpec("facial_editing", Family.SEMANTIC_EDITING, Refs.ZERO, 1, 1,
                 "aligned facial edit, face similarity > 0.65"),
        TaskSpec("facial_editing_misaligned", Family.SEMANTIC_EDITING, Refs.ZERO, 1, 1,
                 "misaligned facial edit, face similarity 0.8-0.9"),
        TaskSpec("style_editing", Family.SEMANTIC_EDITING, Refs.ZERO, 1, 1,
                 "restyle one image (style features, union-find at 0.65)"),
        TaskSpec("style_transfer_reference", Family.SEMANTIC_EDITING, Refs.N, 2, 2,
                 "restyle an image after a style reference"),
        TaskSpec("object_removal", Family.ELEMENT_EDITING, Refs.ZERO, 1, 1,
                 "remove {object_name} (SAM mask + LaMa)"),
        TaskSpec("object_addition", Family.ELEMENT_EDITING, Refs.ZERO, 1, 1,
                 "add {object_name} (reverse of removal)"),
        TaskSpec("object_editing", Family.ELEMENT_EDITING, Refs.ZERO, 1, 1,
                 "change an object (clustering pairs, Table 4 >= 0.5)"),
        TaskSpec("text_removal", Family.ELEMENT_EDITING, Refs.ZERO, 1, 1, "remove rendered text (OCR)"),
        TaskSpec("text_addition", Family.ELEMENT_EDITING, Refs.ZERO, 1, 1, "render text, OCR reads it back"),
        TaskSpec("text_editing", Family.ELEMENT_EDITING, Refs.ZERO, 1, 1,
                 "change text (clustering pairs, Table 4 <= 0.99)"),
        TaskSpec("inpainting", Family.REPAINTING, Refs.ZERO, 1, 1, "fill a random mask"),
        TaskSpec("inpainting_text_guided", Family.REPAINTING, Refs.ZERO, 1, 1,
                 "fill a mask after a region caption"),
        TaskSpec("outpainting", Family.REPAINTING, Refs.ZERO, 1, 1, "extend the canvas"),
        TaskSpec("layer_decouple", Family.LAYER_EDITING, Refs.ZERO, 1, 1,
                 "subject on white, or background filled"),
        TaskSpec("layer_fusion", Family.LAYER_EDITING, Refs.N, 2, 8, "subjects + background -> composite"),
        TaskSpec("reference_generation", Family.REFERENCE_GENERATION, Refs.N, 1, 8,
                 "subject-consistent generation from references (Table 4 0.8-0.95)"),
        TaskSpec("series_generation", Family.REFERENCE_GENERATION, Refs.N, 3, 8,
                 "3-8 inputs of one set -> one target"),
        TaskSpec("multi_turn", Family.MULTI_TURN, Refs.N, 1, 16,
                 "a chain of instructions over one cluster or one image"),
        TaskSpec("long_context", Family.MULTI_TURN, Refs.N, 2, 16,
                 "a chain of single-image tasks with history"),
    ]
    return s


TASKS: dict[str, TaskSpec] = {t.name: t for t in _specs()}


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def zero_ref_tasks() -> list[str]:
    """The tasks ACE++ stage 1 trains on."""
    return sorted(n for n, t in TASKS.items() if t.refs is Refs.ZERO)


_REPAINT_TASKS = frozenset({"object_removal", "object_addition", "text_removal", "text_addition"})


def default_repainting_scale(task: str) -> float:
    """The hint scale s of the condition `edit * (1 - s * mask)`, as the released ACE++ sets it.

    0.0 for control maps (the map stays visible under its mask); 1.0 for repainting, removal, addition and
    subject references (the masked region starts blank); 0.5 for every other edit, most of them mask-less
    (the edit image shows at half strength under a full mask).
    """
    spec = task_spec(task)
    if spec.family is Family.CONTROLLABLE_GENERATION:
        return 0.0
    if spec.family in (Family.REPAINTING, Family.REFERENCE_GENERATION) or task in _REPAINT_TASKS:
        return 1.0
    return 0.5
