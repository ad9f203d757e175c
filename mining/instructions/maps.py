"""Instructions for condition-map and restoration samples, in the direction of each task.

analysis_<map>: image -> map ("Detect the edges of {image}."); control_<map>: map -> image ("Generate an image
that follows the canny edges of {image}."); regional samples say that only the masked region changes.
Restoration: control_degradation is degraded -> clean with the verb of the recorded damage (denoise,
deblur, upscale, restore); analysis_degradation the reverse; control_grayscale is colorization.
Phrasings are picked by a seeded hash of the sample key (deterministic).
"""

from __future__ import annotations

from mining.instructions.synthesis import _pick

MAP_TEMPLATER = ("map-templates", "1")

# how each map is named inside an instruction
MAP_WORDS = {
    "segmentation": "segmentation map", "depth": "depth map", "pose": "human pose skeleton",
    "mosaic": "mosaic", "grayscale": "grayscale version", "canny": "canny edge map",
    "contour": "contour drawing", "doodle": "doodle", "scribble": "scribble",
}

ANALYSIS = (
    "Turn {image} into its {word}.",
    "Produce the {word} of {image}.",
    "Extract the {word} from {image}.",
    "Show {image} as a {word}.",
)
ANALYSIS_SPECIFIC = {
    "segmentation": ("Segment {image} into regions, each in its own colour.",),
    "depth": ("Estimate the depth of {image}.",),
    "pose": ("Detect the human pose in {image} and draw its skeleton.",),
    "grayscale": ("Convert {image} to grayscale.", "Remove the colour from {image}."),
    "canny": ("Detect the edges of {image} with the Canny detector.",),
    "mosaic": ("Pixelate {image}.", "Apply a mosaic to {image}."),
}
CONTROL = (
    "Generate an image that follows the {word} in {image}.",
    "Create a realistic picture from the {word} {image}.",
    "Render a photo whose structure matches the {word} of {image}.",
    "Use the {word} {image} as a guide to generate an image.",
)
COLORIZE = ("Colorize {image}.", "Add natural colours to the grayscale photo {image}.",
            "Turn the black-and-white {image} into a colour photo.")
RESTORE = {
    "denoise": ("Denoise {image}.", "Remove the noise from {image}.", "Clean up the grain in {image}."),
    "deblur": ("Deblur {image}.", "Sharpen the blurry {image}.", "Remove the blur from {image}."),
    "upscale": ("Upscale {image} and recover its fine detail.", "Restore the lost resolution of {image}.",
                "Make the low-resolution {image} sharp and detailed."),
    "restore": ("Restore {image} to a clean, high-quality photo.", "Repair the degraded {image}.",
                "Remove the compression artefacts, noise and blur from {image}."),
}
DEGRADE = {
    "noise": "add noise", "blur": "blur", "jpeg": "compress as a low-quality JPEG", "resize": "lower the resolution",
}
REGIONAL = (" Only inside the masked region.", " Change only the masked area.", " Keep everything outside the mask.")
MULTI = (
    "Generate an image following several conditions, one per region: {parts}.",
    "Create a picture where {parts}.",
)


def map_instruction(task: str, key: str, seed: int, regional: bool = False, ops: list[str] | None = None,
                    verb: str | None = None) -> str:
    """The instruction of sample `key` for an analysis_<map> or control_<map> task."""
    direction, _, name = task.partition("_")
    if name == "degradation":
        if direction == "control":
            text = _pick(RESTORE[verb or "restore"], key, seed, task)
        else:
            steps = ", then ".join(DEGRADE[o] for o in ops or [])
            text = f"Degrade {{image}}: {steps}."
    elif name == "grayscale" and direction == "control":
        text = _pick(COLORIZE, key, seed, task)
    elif direction == "analysis":
        text = _pick(ANALYSIS + ANALYSIS_SPECIFIC.get(name, ()), key, seed, task).format(
            image="{image}", word=MAP_WORDS[name])
    elif direction == "control":
        text = _pick(CONTROL, key, seed, task).format(image="{image}", word=MAP_WORDS[name])
    else:
        raise ValueError(f"not a condition-map task: {task!r}")
    return text + (_pick(REGIONAL, key, seed, "regional") if regional else "")


def multi_instruction(names: list[str], key: str, seed: int) -> str:
    """control_multi: input i (`{image<i>}`) is map names[i] over its own segment group."""
    parts = ", ".join(f"the region of {{image{i + 1}}} follows its {MAP_WORDS[n]}" for i, n in enumerate(names))
    return _pick(MULTI, key, seed, "control_multi").format(parts=parts)
