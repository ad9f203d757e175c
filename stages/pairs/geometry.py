"""Geometric confirmation for the pair mining (mining/pairs/geometric.py over catalogued images) and the
reconciliation of a mining batch's counts."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from mining.pairs.geometric import Verifier
from mining.pairs.presets import TaskPreset
from schemas.config import IngestConfig, MiningConfig
from schemas.records import Generator

GEOMETRIC_GENERATOR = Generator(name="keypoint-ransac", version="1")
PAIR_GEOMETRY_TASKS = ("general_editing", "reference_generation")  # pair presets whose pairs must show one subject


def uses_geometry(preset: TaskPreset, cfg: MiningConfig) -> bool:
    """Does mining this preset confirm its groups or pairs by keypoint geometry?"""
    return cfg.geometric_check and (preset.keep == "groups" or preset.task in PAIR_GEOMETRY_TASKS)


def catalog_verifier(catalog_root: str, min_inliers: int,
                     max_pixels: int | None = None) -> Callable[[list[str]], Verifier]:
    """ids -> a Verifier over those catalogued images (their URIs looked up once, at the first image loaded:
    memory is bounded by the ids asked for)."""
    from mining.image.decode import decode_image
    from stages.corpus.ingest import catalog_uris
    from store.sources import read_uri

    cap = max_pixels or IngestConfig().max_pixels

    def make(ids: list[str]) -> Verifier:
        uris: dict[str, str] = {}

        def load(i: str) -> np.ndarray:
            if not uris:
                uris.update(catalog_uris(catalog_root, set(ids)))
            return np.asarray(decode_image(read_uri(uris[i]), max_pixels=cap, min_side=1).image)

        return Verifier(load, min_inliers)

    return make


def reconcile(out: str, candidates: int, pairs: int, set_members: int, grouped: int,
              drops: Mapping[str, int]) -> None:
    """Every candidate pair is kept or dropped by a reason, every member of a group preset's sets is grouped
    or dropped by a reason; else the batch fails before its marker."""
    dropped = drops.get("classifier", 0) + drops.get("incoherent_pair", 0)
    if candidates != pairs + dropped:
        raise RuntimeError(f"{out}: {candidates} candidate pairs != {pairs} kept + {dropped} dropped")
    placed = grouped + drops.get("incoherent_group", 0) + drops.get("group_leftover", 0) + \
        drops.get("group_earlier_rows", 0)
    if set_members != placed:
        raise RuntimeError(f"{out}: {set_members} set members != {grouped} grouped + "
                           f"{placed - grouped} dropped (incoherent_group, group_leftover, group_earlier_rows)")
