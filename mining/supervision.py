"""Does a sample teach what its instruction says? Per-task checks of the supervision, on the packed sample.

Every packer runs `check(sample, cfg)` on each sample before it is written (a failing sample is dropped and
counted under its task and reason), and `aceforge shards audit SET` runs the same checks over a packed set.
A check sees only the sample (its decoded images, masks, instruction and lineage), so an old set can be
audited with today's checks. Each check returns None (passes) or one reason, plus the scores it measured:

- `no_change`: the target is (almost) the edit image where the task asks for a change (identity edits);
- `already_grey`: grayscale / colourise from a source without colour;
- `flat_region`: a condition map with no content inside its mask (one flat value; pose: no skeleton);
- `incoherent_group` / `incoherent_pair`: series, reference and general-editing inputs that do not show
  the target's subject (mining/pairs/geometric.py);
- `text_unconfirmed`: the text a text removal names is not read in the edit image, or is read after it;
  a text addition's text is not read back (mining/text/confirm.py);
- `style_mismatch`: a style reference whose style features are far from the target's (mining/style/features.py);
- `smear`: a removal or repainting fill whose texture a person would reject (mining/objects/smear.py);
- `face_margin`: an aligned face pair too close to the identity threshold (mining/faces/pairs.py).

Checks are listed per task in CHECKS (a task name, or a `prefix*` for the tasks without their own entry),
cheapest first; the first failure wins.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from schemas.config import SupervisionConfig
from schemas.records import AceSample, Role

CHECKER = ("supervision", "1")
REASONS = ("no_change", "already_grey", "flat_region", "incoherent_group", "incoherent_pair", "text_unconfirmed",
           "style_mismatch", "smear", "face_margin")


def _decode(data: bytes, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode))


@dataclass
class View:
    """A sample decoded once for its checks: RGB uint8 inputs and target, masks as bool (True = generate)."""

    task: str
    instruction: str
    inputs: list[np.ndarray]
    masks: list[np.ndarray | None]
    target: np.ndarray
    scores: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    generators: list[str] = field(default_factory=list)
    key: str = ""
    edit_at: int = 0  # index of the edit unit among the inputs (a chain lists its earlier turns first)

    @property
    def edit(self) -> np.ndarray | None:
        return self.inputs[self.edit_at] if self.inputs else None

    @property
    def mask(self) -> np.ndarray | None:
        """The edit unit's mask; None when it has none or it covers everything."""
        return self.mask_of(self.edit_at)

    def mask_of(self, i: int) -> np.ndarray | None:
        m = self.masks[i] if i < len(self.masks) else None
        return None if m is None or m.all() else m


def view(sample: AceSample) -> View:
    roles = [u.role for u in sample.units]
    return View(task=sample.task, instruction=sample.instruction,
                inputs=[_decode(u.image, "RGB") for u in sample.units],
                masks=[None if u.mask is None else _decode(u.mask, "L") > 128 for u in sample.units],
                target=_decode(sample.target.image, "RGB"), scores=dict(sample.lineage.scores),
                labels=dict(sample.lineage.labels), generators=[g.name for g in sample.lineage.generators],
                key=sample.key, edit_at=roles.index(Role.EDIT) if Role.EDIT in roles else 0)


Verdict = tuple[str | None, dict[str, float]]
Check = Callable[[View, SupervisionConfig], Verdict]


# --- the generic checks -------------------------------------------------------------------------------------

def _thumb(a: np.ndarray, side: int = 64) -> np.ndarray:
    import cv2

    return cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


CHANGED_LEVEL = 16  # a pixel whose largest channel difference exceeds this counts as changed


def change(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(mean absolute difference 0-255, share of pixels changed by more than CHANGED_LEVEL) of two RGB images:
    inside `mask` when given, on 64 px thumbnails when their sizes differ."""
    if a.shape != b.shape:
        d = np.abs(_thumb(a) - _thumb(b))
    else:
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        if mask is not None and mask.shape == a.shape[:2] and mask.any():
            d = d[mask]
    return float(d.mean()), float((d.reshape(-1, 3).max(1) > CHANGED_LEVEL).mean())


def no_change(v: View, cfg: SupervisionConfig) -> Verdict:
    """Every input must differ from the target: the edit inside its mask (where the task generates), a
    reference anywhere (a series or reference target that repeats one of its inputs teaches copying). An input
    differs when its mean difference reaches `min_change` or a `min_changed_share` of its pixels changed (a
    local edit: an earlier turn of a chain differs from the last only inside the masks since)."""
    least, share = 255.0, 1.0
    for i, x in enumerate(v.inputs):
        mean, changed = change(x, v.target, v.mask_of(i))
        if mean < cfg.min_change and changed < cfg.min_changed_share:
            return "no_change", {"change": round(mean, 3), "changed_share": round(changed, 5)}
        least, share = min(least, mean), min(share, changed)
    return None, {"change": round(least, 3), "changed_share": round(share, 5)}


def colourfulness(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Hasler and Suesstrunk's colourfulness (0 for a grey image, ~15 dull, > 50 vivid)."""
    x = rgb.astype(np.float32)
    rg, yb = x[..., 0] - x[..., 1], 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    if mask is not None and mask.any():
        rg, yb = rg[mask], yb[mask]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def has_colour(v: View, cfg: SupervisionConfig) -> Verdict:
    """grayscale (image -> grey) and colourise (grey -> image): the colour image must have colour, inside the
    mask for a regional sample."""
    source = v.edit if v.task.startswith("analysis_") else v.target
    c = colourfulness(source, v.mask)
    return ("already_grey" if c < cfg.min_colourfulness else None), {"colourfulness": round(c, 3)}


def map_content(m: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the pixels (inside `mask`) that differ from the map's most common value there: 0 for one flat
    value, the skeleton's share for a pose map on black, the edge share for a canny map."""
    px = (m[mask] if mask is not None else m.reshape(-1, m.shape[-1])).astype(np.int32)
    if not len(px):
        return 0.0
    packed = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
    _, counts = np.unique(packed, return_counts=True)
    return float(1.0 - counts.max() / len(packed))


def map_has_content(v: View, cfg: SupervisionConfig) -> Verdict:
    """A condition map (the target of analysis_*, the edit of control_*) carries information inside its mask."""
    kind = v.task.partition("_")[2]
    cmap = v.target if v.task.startswith("analysis_") else v.edit
    c = map_content(cmap, v.mask)
    floor = cfg.min_map_content.get(kind, cfg.min_map_content.get("default", 0.0))
    return ("flat_region" if c < floor else None), {"map_content": round(c, 5)}


def multi_maps_have_content(v: View, cfg: SupervisionConfig) -> Verdict:
    """control_multi: each input is one segment group's map on mid-grey; each must carry some content."""
    least = min(map_content(x, None) for x in v.inputs)
    floor = cfg.min_map_content.get("default", 0.0)
    return ("flat_region" if least < floor else None), {"map_content": round(least, 5)}


# the domain checks are named "module:function" and imported on first use (OCR, keypoints, style nets)
CHECKS: dict[str, list[Check | str]] = {
    "*": [no_change],
    "analysis_grayscale": [has_colour, no_change],  # a grey source is named as such, not as an identity edit
    "control_grayscale": [has_colour, no_change],
    "analysis_*": [map_has_content],
    "control_*": [map_has_content],
    "control_multi": [multi_maps_have_content],
    "object_removal": ["mining.objects.smear:fill_ok"],
    "object_addition": ["mining.objects.smear:fill_ok"],
    "layer_fusion": ["mining.objects.smear:fill_ok"],
    "style_transfer_reference": ["mining.style.features:style_reference_ok"],
    "facial_editing": ["mining.faces.pairs:face_pair_ok"],
    "series_generation": ["mining.pairs.geometric:coherent_group"],
    "reference_generation": ["mining.pairs.geometric:coherent_group"],
    "general_editing": ["mining.pairs.geometric:coherent_pair"],
    "text_removal": ["mining.objects.smear:fill_ok", "mining.text.confirm:text_removal_ok"],
    "text_addition": ["mining.objects.smear:fill_ok", "mining.text.confirm:text_addition_ok"],
}
# map tasks whose map is not a drawn structure: degradation keeps the photo, depth is smooth but not flat
_NOT_A_MAP = ("analysis_degradation", "control_degradation", "analysis_grayscale", "control_grayscale")


def _resolve(fn: Check | str) -> Check:
    if isinstance(fn, str):
        import importlib

        module, _, name = fn.partition(":")
        return getattr(importlib.import_module(module), name)
    return fn


def checks_for(task: str) -> list[Check]:
    """The checks of `task`, in order: the generic ones (unless its own list places them), its own (or its
    prefix's when it has none)."""
    own = list(CHECKS.get(task, []))
    out = [f for f in CHECKS["*"] if f not in own] + own
    for key, fns in CHECKS.items():
        if key.endswith("*") and key != "*" and task.startswith(key[:-1]) and task not in CHECKS:
            if key in ("analysis_*", "control_*") and task in _NOT_A_MAP:
                continue
            out += fns
    return [_resolve(f) for f in out]


def check_view(v: View, cfg: SupervisionConfig) -> Verdict:
    scores: dict[str, float] = {}
    for fn in checks_for(v.task):
        why, s = fn(v, cfg)
        scores.update(s)
        if why is not None:
            if why not in REASONS:
                raise ValueError(f"check {fn.__name__} returned {why!r}, not one of {REASONS}")
            return why, scores
    return None, scores


def check(sample: AceSample, cfg: SupervisionConfig) -> Verdict:
    """(None or the reason the sample fails, the scores measured)."""
    return check_view(view(sample), cfg)


@dataclass
class Tally:
    """Samples checked and failing, by task and reason."""

    checked: Counter = field(default_factory=Counter)
    failed: dict[str, Counter] = field(default_factory=dict)

    def add(self, task: str, why: str | None) -> None:
        self.checked[task] += 1
        if why is not None:
            self.failed.setdefault(task, Counter())[why] += 1

    def as_dict(self) -> dict:
        return {"checked": dict(sorted(self.checked.items())),
                "dropped": {t: dict(sorted(c.items())) for t, c in sorted(self.failed.items())}}

    @property
    def n_failed(self) -> int:
        return sum(sum(c.values()) for c in self.failed.values())
