"""Face pairs from unit face descriptors (one face per image): aligned pairs, misaligned band pairs, instructions.

Aligned (`facial_editing`): the same person (cosine >= `aligned_min`) in the same framing: images of one
size whose five landmarks lie within `max_shift` x the image diagonal of each other on average, and at least
`margin` above `aligned_min` (a pair just over the identity threshold may be two people: dropped as
face_margin); the change is named by mining/faces/change.py. Misaligned (`facial_editing_misaligned`, ACE
Table 4): union-find on band edges (lo <= s <= hi) over the faces given (one bucket: mining/faces/buckets.py),
every set pair re-checked in the band,
pairs per set capped; a pair already
taken as aligned is not used twice. Counts reconcile: aligned candidates = samples + face_margin +
not_aligned + over_face_cap + other_bucket; band set pairs = samples + out_of_band + over_set_cap +
taken_as_aligned + other_bucket (other_bucket: a pair another bucket's unit keeps).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from mining.pairs.band import BandEdges, band_edges, disjoint_sets, pairs_from_sets

if TYPE_CHECKING:
    from mining.supervision import View
    from schemas.config import SupervisionConfig

PAIRER = ("face-pairs", "1")
ERASER = ("face-erased-reference", "1")
CHANGE_NAMER = ("face-change-kind", "1")  # mining/faces/change.py: the aligned instruction names the change

TEMPLATES: dict[str, tuple[str, ...]] = {
    "facial_editing": (
        "Edit the face in {image} into the face of the target photo, keeping the person and the framing.",
        "Change the facial appearance in {image} while keeping the same person and pose.",
        "Adjust the face of the person in {image}; keep everything else in place.",
        "Retouch the face in {image}, keeping the person's identity.",
    ),
    "facial_editing_misaligned": (
        "Show the person in {image} in a new photo with a different framing.",
        "Generate another picture of the same person as in {image}.",
        "Make a new portrait of the person from {image}, keeping their identity.",
        "Depict the person of {image} again from a different view, same identity.",
    ),
    "reference_generation": (
        "Fill the masked face region of {image1} with the face of the person in {image2}.",
        "Restore the erased face in {image1} so that it is the person shown in {image2}.",
        "Paint the face of the person from {image2} into the masked area of {image1}.",
        "Complete {image1} with the face of {image2} inside the mask.",
    ),
}


def face_instruction(task: str, key: str, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{task}|{key}".encode()).digest()[:8], "big")
    options = TEMPLATES[task]
    return options[h % len(options)]


@dataclass
class FacePairs:
    aligned: list[tuple[int, int, float, float]] = field(default_factory=list)  # i, j, cosine, landmark shift
    misaligned: list[tuple[int, int, float]] = field(default_factory=list)  # i, j, cosine
    aligned_counts: dict[str, int] = field(default_factory=dict)
    misaligned_counts: dict[str, int] = field(default_factory=dict)


def landmark_shift(lm_a: np.ndarray, lm_b: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]) -> float:
    """Mean distance of the five landmarks / image diagonal; inf for images of different sizes."""
    if tuple(size_a) != tuple(size_b):
        return float("inf")
    return float(np.linalg.norm(lm_a - lm_b, axis=1).mean() / np.hypot(*size_a))


def face_pairs(x: np.ndarray, landmarks: np.ndarray, sizes: np.ndarray, *, band: tuple[float, float],
               aligned_min: float, max_shift: float, max_pairs_per_face: int, max_pairs_per_set: int,
               seed: int, margin: float = 0.0,
               search: Callable[[np.ndarray, float, float], BandEdges] = band_edges,
               keep: Callable[[int, int], bool] | None = None) -> FacePairs:
    """x: (n, 128) unit descriptors; landmarks: (n, 5, 2); sizes: (n, 2) image (h, w). Row indices out.
    `search(x, lo, hi)` gives the candidate edges (exact all-pairs by default; mining/faces/buckets.py's
    `BucketSearch` inside one bucket). `keep(i, j)` False: the pair belongs to another unit (a face spilled
    into two buckets), counted as other_bucket before any other check."""
    out = FacePairs()
    lo, hi = band
    n = len(x)
    cand = search(x, aligned_min, 1.0) if n else None
    per_face: Counter[int] = Counter()
    taken: set[tuple[int, int]] = set()
    drops: Counter[str] = Counter()
    for i, j, s in zip(*(cand.i.tolist(), cand.j.tolist(), cand.score.tolist())) if cand is not None else []:
        if keep is not None and not keep(i, j):
            drops["other_bucket"] += 1
            continue
        shift = landmark_shift(landmarks[i], landmarks[j], sizes[i], sizes[j])
        if s < aligned_min + margin:
            drops["face_margin"] += 1
        elif shift > max_shift:
            drops["not_aligned"] += 1
        elif per_face[i] >= max_pairs_per_face or per_face[j] >= max_pairs_per_face:
            drops["over_face_cap"] += 1
        else:
            per_face[i] += 1
            per_face[j] += 1
            taken.add((i, j))
            out.aligned.append((i, j, s, shift))
    out.aligned_counts = {"candidates": len(cand) if cand is not None else 0, "samples": len(out.aligned),
                          "dropped": dict(sorted(drops.items()))}
    edges = search(x, lo, hi) if n else None
    sets = disjoint_sets(n, edges) if edges is not None else []
    sp = pairs_from_sets(x, sets, lo, hi, max_pairs_per_set, seed) if sets else None
    mdrops: Counter[str] = Counter()
    if sp is not None:
        mdrops["out_of_band"] += sp.out_of_band
        mdrops["over_set_cap"] += sp.capped
        for i, j, s in zip(sp.i.tolist(), sp.j.tolist(), sp.score.tolist()):
            if keep is not None and not keep(i, j):
                mdrops["other_bucket"] += 1
            elif (i, j) in taken:
                mdrops["taken_as_aligned"] += 1
            else:
                out.misaligned.append((i, j, s))
    set_pairs = sum(len(s) * (len(s) - 1) // 2 for s in sets)
    out.misaligned_counts = {"band_edges": len(edges) if edges is not None else 0,
                             "above_band": edges.duplicates if edges is not None else 0, "sets": len(sets),
                             "set_pairs": set_pairs, "samples": len(out.misaligned),
                             "dropped": {k: v for k, v in sorted(mdrops.items()) if v}}
    return out


def face_pair_ok(v: View, cfg: SupervisionConfig) -> tuple[str | None, dict[str, float]]:
    """facial_editing: the pair's face cosine (lineage score `face_cosine`) at least the identity threshold the
    pair stage used (lineage `face_threshold`; FaceConfig's default for a set packed before it was recorded)
    plus `cfg.face_margin`, else face_margin."""
    from schemas.config import FaceConfig

    cos = v.scores.get("face_cosine")
    floor = v.scores.get("face_threshold", FaceConfig().aligned_min) + cfg.face_margin
    if cos is None:
        return "face_margin", {"face_floor": round(floor, 4)}
    return ("face_margin" if cos < floor else None), {"face_cosine": round(cos, 4), "face_floor": round(floor, 4)}
