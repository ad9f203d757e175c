"""Instructions for text pairs (ACE App. B.5.1): they name the content, the position and, where it is
known (rendered text), the colour. Several phrasings per task, chosen by a seeded hash of the sample."""

from __future__ import annotations

import hashlib

TEXT_TEMPLATER = ("text-templates", "1")

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    # with the colour: the text was rendered here, so its colour is known
    "text_addition": {
        "coloured": (
            'Add the text "{content}" in {colour} at the {position} of {image}.',
            'Write "{content}" in {colour} letters at the {position} of {image}.',
            'Put the {colour} words "{content}" on the {position} of {image}.',
            'Render "{content}" in {colour} in the {position} area of {image}.',
        ),
        "plain": (
            'Add the text "{content}" at the {position} of {image}.',
            'Write "{content}" on the {position} of {image}.',
            'Put the words "{content}" in the {position} area of {image}.',
            'Place the text "{content}" at the {position} of {image}, matching the scene.',
        ),
    },
    "text_removal": {
        "coloured": (
            'Remove the {colour} text "{content}" from the {position} of {image}.',
            'Erase the {colour} words "{content}" at the {position} of {image}.',
            'Delete the {colour} text at the {position} of {image} and restore the background.',
            'Take the {colour} writing "{content}" out of {image}.',
        ),
        "plain": (
            'Remove the text "{content}" from {image}.',
            'Erase the words "{content}" at the {position} of {image}.',
            'Delete all the text at the {position} of {image} and fill in the background.',
            'Clean the writing "{content}" off {image}, keeping everything else.',
        ),
    },
}


def _pick(options: tuple[str, ...], key: str, seed: int, salt: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()[:8], "big")
    return options[h % len(options)]


def text_instruction(task: str, key: str, seed: int, content: str, position: str, colour: str | None = None) -> str:
    """The instruction of sample `key` for `task` (text_addition or text_removal), deterministic in key and seed."""
    kind = "coloured" if colour else "plain"
    template = _pick(TEMPLATES[task][kind], key, seed, task)
    return template.format(image="{image}", content=content.replace('"', "'"), position=position, colour=colour or "")


def grid_position(mask_box: tuple[int, int, int, int], shape: tuple[int, int]) -> str:
    """The named cell of a 3x3 grid holding the centre of box (x0, y0, x1, y1) in an image of (H, W)."""
    from mining.text.render import POSITIONS

    x0, y0, x1, y1 = mask_box
    h, w = shape
    row = min(2, int(3 * ((y0 + y1) / 2) / h))
    col = min(2, int(3 * ((x0 + x1) / 2) / w))
    return POSITIONS[(row, col)]
