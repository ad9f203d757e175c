"""Instructions for synthesized samples: several phrasings per task, chosen by a seeded hash of the sample.

`{object_name}` is filled with a generic wording (no label model runs yet, and a specific name is never
invented); `{side}` with the outpainting side. Every instruction names its inputs (`{image}`, or `{image1}`, `{image2}`).
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


def _pick(options: tuple[str, ...], key: str, seed: int, salt: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()[:8], "big")
    return options[h % len(options)]


def synth_instruction(task: str, key: str, seed: int, side: str | None = None) -> str:
    """The instruction of sample `key` for `task` (deterministic in key and seed)."""
    template = _pick(TEMPLATES[task], key, seed, task)
    fields = {"image": "{image}", "image1": "{image1}", "image2": "{image2}", "object_name": _pick(GENERIC_OBJECT, key, seed, "object"),
              "side": side or ""}
    return template.format(**fields)
