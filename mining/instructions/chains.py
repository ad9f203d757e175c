"""Instructions of the multi-input synthesized samples: style pairs and chains of turns.

A chain's instruction keeps every turn's own instruction, each with its `{image}` rewritten to the indicator
of the image that turn edited (`{image1}`..`{imageN}`, the sample's inputs in order), then the current turn.
Framings are several per task, chosen by a seeded hash of the sample (as mining/instructions/synthesis.py does).
"""

from __future__ import annotations

import hashlib
import re

CHAIN_TEMPLATER = ("chain-templates", "1")

STYLE_EDITING = (
    "Render {image} as {style}.",
    "Turn {image} into {style}, keeping its content.",
    "Restyle {image}: make it look like {style}.",
    "Redraw {image} as {style} without changing what it shows.",
)
STYLE_TRANSFER = (
    "Restyle {image1} in the style of {image2}.",
    "Paint the content of {image1} in the style of {image2}.",
    "Keep what {image1} shows, but render it in the style of {image2}.",
    "Apply the visual style of {image2} to {image1}.",
)
# how one earlier turn is recalled: {src} and {dst} are indicators, {text} the turn's own instruction
HISTORY = (
    "Turn {n}: {text} ({src} became {dst}.)",
    "Step {n} on {src} gave {dst}: {text}",
    "Earlier ({n}), {src} -> {dst}: {text}",
)
CURRENT = (
    "Now, turn {n}: {text}",
    "Next, on {src}: {text}",
    "Then, step {n}: {text}",
)
_IMAGE = re.compile(r"\{image\d*\}")


def _pick(options: tuple[str, ...], key: str, seed: int, salt: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()[:8], "big")
    return options[h % len(options)]


def on_input(text: str, index: int) -> str:
    """A single-image instruction with its indicator(s) rewritten to `{image<index>}` (1-based)."""
    return _IMAGE.sub("{image%d}" % index, text)


def chain_instruction(turns: list[tuple[str, int, int | None]], key: str, seed: int) -> str:
    """`turns`: (instruction, index of its input, index of its output or None for the current turn), in
    order; every turn but the last has an output among the inputs."""
    if len(turns) < 2 or turns[-1][2] is not None or any(t[2] is None for t in turns[:-1]):
        raise ValueError("a chain instruction needs earlier turns with outputs and one current turn")
    hist = _pick(HISTORY, key, seed, "history")
    lines = [hist.format(n=n, text=on_input(text, src), src="{image%d}" % src, dst="{image%d}" % dst)
             for n, (text, src, dst) in enumerate(turns[:-1], 1)]
    text, src, _ = turns[-1]
    lines.append(_pick(CURRENT, key, seed, "current").format(n=len(turns), text=on_input(text, src),
                                                             src="{image%d}" % src))
    return " ".join(lines)


def style_instruction(task: str, key: str, seed: int, style: str | None = None) -> str:
    if task == "style_editing":
        if not style:
            raise ValueError("style_editing needs the style's name")
        return _pick(STYLE_EDITING, key, seed, task).format(image="{image}", style=style)
    if task == "style_transfer_reference":
        return _pick(STYLE_TRANSFER, key, seed, task)
    raise ValueError(f"no style templates for {task!r}")
