"""What an aligned face pair changes, so its instruction names it: a colour cast over the whole photo, or the face.

Two images of one framing (a -> b). The change is fitted with one affine colour map over the whole image
(b ~ M a + o, 3x3 + offset, least squares): when that map explains at least `global_share` of the mean
absolute change, the edit is a global colour/brightness cast and is named by what the map does (grey,
warmer, cooler, brighter, darker, else "colours"); a grey photo that gains colour is "colourise".
Otherwise the change left after the map is located: at
least `face_ratio` times denser inside the face region than outside it, the edit is the face's; else a
whole-photo edit no one colour map makes, named by its strongest measured direction (more vivid or muted
colours, brighter, darker, warmer, cooler), or UNNAMED when it has none: such a pair is dropped
(`unnamed_change`), since no instruction can say what it does.
"""

from __future__ import annotations

import hashlib

import numpy as np

CHANGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "grey": ("Turn {image} into a black-and-white photo, keeping everything else.",
             "Remove the colour from {image}: the same photo in greyscale."),
    "warmer": ("Give {image} a warmer colour cast over the whole photo, changing nothing else.",
               "Warm up the colours of {image}; keep the person and the framing as they are."),
    "cooler": ("Give {image} a cooler, bluer colour cast over the whole photo, changing nothing else.",
               "Cool down the colours of {image}; keep the person and the framing as they are."),
    "brighter": ("Make {image} brighter overall, changing nothing else.",
                 "Brighten the whole of {image}, keeping the person and the framing."),
    "darker": ("Make {image} darker overall, changing nothing else.",
               "Darken the whole of {image}, keeping the person and the framing."),
    "colours": ("Adjust the colours of the whole of {image}, keeping the person and the framing.",
                "Change the colour balance of {image} everywhere; nothing else changes."),
    "colourise": ("Colourise the black-and-white photo {image}, keeping everything else.",
                  "Give the greyscale {image} natural colours; nothing else changes."),
    "vivid": ("Make the colours of {image} more vivid, keeping the person and the framing.",
              "Boost the colour saturation of the whole of {image}; nothing else changes."),
    "muted": ("Make the colours of {image} more muted, keeping the person and the framing.",
              "Desaturate the whole of {image} a little; nothing else changes."),
}
UNNAMED = "photo"  # a whole-photo change with no measured direction: no instruction can name it (dropped)


def _pick(options: tuple[str, ...], key: str, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|face-change|{key}".encode()).digest()[:8], "big")
    return options[h % len(options)]


def change_kind(a: np.ndarray, b: np.ndarray, face: np.ndarray, global_share: float = 0.75,
                face_ratio: float = 2.0, cast: float = 6.0) -> tuple[str, dict[str, float]]:
    """(kind, scores): kind is 'face' (a local face edit), 'photo' (a whole-photo edit no colour map makes)
    or a colour change ('grey', 'colourise', 'warmer', 'cooler', 'brighter', 'darker', 'colours'). `face`:
    bool (h, w) mask of the face region of a; `cast`: a mean channel shift (0-255) that names a direction."""
    if a.shape != b.shape:
        raise ValueError(f"an aligned pair has one size, got {a.shape} and {b.shape}")
    fa = a.reshape(-1, 3).astype(np.float64)
    fb = b.reshape(-1, 3).astype(np.float64)
    total = float(np.abs(fb - fa).mean())
    design = np.hstack([fa, np.ones((len(fa), 1))])
    coef, *_ = np.linalg.lstsq(design, fb, rcond=None)
    resid = np.abs(fb - design @ coef).mean(1)
    explained = 1.0 - float(resid.mean()) / max(total, 1e-6)
    m = face.reshape(-1)
    inside = float(resid[m].mean()) if m.any() else 0.0
    outside = float(resid[~m].mean()) if (~m).any() else 0.0
    scores = {"change_total": round(total, 3), "change_global_share": round(explained, 4),
              "change_face_resid": round(inside, 3), "change_rest_resid": round(outside, 3)}
    sat_a, sat_b = (float((f.max(1) - f.min(1)).mean()) for f in (fa, fb))
    scores.update({"change_sat_before": round(sat_a, 3), "change_sat_after": round(sat_b, 3)})
    if sat_a < 0.25 * sat_b and sat_b > 8:
        return "colourise", scores
    if explained >= global_share:
        shift = (fb - fa).mean(0)
        warm = float(shift[0] - shift[2])
        light = float(shift.mean())
        scores.update({"change_warm_shift": round(warm, 3), "change_light_shift": round(light, 3)})
        if sat_b < 0.25 * sat_a and sat_a > 8:
            return "grey", scores
        if abs(warm) >= cast and abs(warm) >= abs(light):
            return ("warmer" if warm > 0 else "cooler"), scores
        if abs(light) >= cast:
            return ("brighter" if light > 0 else "darker"), scores
        return "colours", scores
    if inside >= face_ratio * max(outside, 1e-6):
        return "face", scores
    # not one colour map, not the face: name the strongest global direction that was measured, if any
    shift = (fb - fa).mean(0)
    warm, light = float(shift[0] - shift[2]), float(shift.mean())
    scores.update({"change_warm_shift": round(warm, 3), "change_light_shift": round(light, 3)})
    if sat_b >= 1.3 * sat_a and sat_b - sat_a >= cast:
        return "vivid", scores
    if sat_a >= 1.3 * sat_b and sat_a - sat_b >= cast:
        return "muted", scores
    if abs(light) >= cast and abs(light) >= abs(warm):
        return ("brighter" if light > 0 else "darker"), scores
    if abs(warm) >= cast:
        return ("warmer" if warm > 0 else "cooler"), scores
    return UNNAMED, scores


def change_instruction(kind: str, key: str, seed: int) -> str | None:
    """The instruction of a named change kind; None for 'face' (the face templates apply) and UNNAMED."""
    return None if kind in ("face", UNNAMED) else _pick(CHANGE_TEMPLATES[kind], key, seed)
