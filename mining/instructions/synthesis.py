"""Instructions for synthesized samples: several phrasings per task, chosen by a seeded hash of the sample.

`{object_name}` is "the <label>" when a model named the object (mining/objects/names.py), else a generic
wording (a specific name is never invented); object addition and text-guided inpainting, which need the name
in their wording, have their own templates for a named object. `{side}` is the outpainting side. Every instruction names its inputs (`{image}`, or `{image1}`, `{image2}`).
"""

from __future__ import annotations

import hashlib

TEMPLATER = ("synth-templates", "1")
GENERIC_OBJECT = ("the marked object", "the object in the masked region", "the highlighted object")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "object_removal": (
        "Remove {object_name} from {image}.",
        "Erase {object_name} in {image} and fill in the background.",
        "Delete {object_name} from {image}, keeping everything else unchanged.",
        "Take {object_name} out of {image}.",
    ),
    "object_addition": (
        "Add an object to {image} inside the masked region.",
        "Place a fitting object in the masked area of {image}.",
        "Insert something that belongs in the scene into the marked region of {image}.",
        "Fill the masked region of {image} with a plausible object.",
    ),
    "layer_decouple": (
        "Isolate the unmasked object of {image} on a white background.",
        "Cut out the object left unmasked in {image} and put it on plain white.",
        "Replace the masked background of {image} with white, keeping the object.",
        "Extract the object of {image} onto a white layer.",
    ),
    "layer_fusion": (
        "Place the object from {image2} into the masked region of {image1}.",
        "Composite the subject of {image2} into {image1} where it is masked.",
        "Insert the object shown on white in {image2} into the masked area of {image1}.",
        "Blend the object of {image2} into the scene of {image1} inside the mask.",
    ),
    "inpainting": (
        "Fill in the masked regions of {image}.",
        "Repaint the missing parts of {image} so they blend with the rest.",
        "Restore the masked areas of {image}.",
        "Complete {image} where it is masked out.",
    ),
    "outpainting": (
        "Extend {image} to the {side}.",
        "Outpaint {image} on the {side} side.",
        "Continue the scene of {image} beyond its {side} edge.",
        "Expand the canvas of {image} towards the {side} and fill it in.",
    ),
}


# tasks whose wording needs a named object: used instead of TEMPLATES when a label is known
NAMED_TEMPLATES: dict[str, tuple[str, ...]] = {
    "object_addition": (
        "Add {a_name} to {image} inside the masked region.",
        "Place {a_name} in the masked area of {image}.",
        "Insert {a_name} into the marked region of {image}.",
        "Put {a_name} where {image} is masked, matching the scene.",
    ),
    "inpainting_text_guided": (
        "Fill the masked region of {image} with {a_name}.",
        "Paint {a_name} into the masked area of {image}.",
        "Complete the masked part of {image}: it shows {a_name}.",
        "Repaint the marked region of {image} as {a_name} that fits the scene.",
    ),
}


def article(label: str) -> str:
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


def _pick(options: tuple[str, ...], key: str, seed: int, salt: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()[:8], "big")
    return options[h % len(options)]


def synth_instruction(task: str, key: str, seed: int, side: str | None = None, object_name: str | None = None) -> str:
    """The instruction of sample `key` for `task` (deterministic in key, seed and the object's name)."""
    if object_name is not None and task in NAMED_TEMPLATES:
        template = _pick(NAMED_TEMPLATES[task], key, seed, task)
    elif task in TEMPLATES:
        template = _pick(TEMPLATES[task], key, seed, task)
    else:
        raise ValueError(f"no templates for {task!r}" + (" without an object name" if task in NAMED_TEMPLATES else ""))
    name = f"the {object_name}" if object_name is not None else _pick(GENERIC_OBJECT, key, seed, "object")
    fields = {"image": "{image}", "image1": "{image1}", "image2": "{image2}", "object_name": name,
              "a_name": article(object_name) if object_name is not None else "", "side": side or ""}
    return template.format(**fields)
