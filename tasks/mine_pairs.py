"""Mine pairs per cluster for one task preset: <root>/pairs/<preset>/

    edges.parquet   cluster, source_id, target_id, score    (every in-band edge: re-tune without recomputing)
    sets.parquet    cluster, set_id, id                      (disjoint sets of two or more)
    pairs.parquet   PairRecord rows that passed every check
    groups.parquet  cluster, set_id, input_ids, target_id    (series / reference presets)
    drops.json      counts by reason; then the marker
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from mining.band import band_edges, disjoint_sets, pairs_from_sets
from mining.pair_classifier import PairClassifier
from mining.presets import TaskPreset, largest_set, series_groups
from schemas.arrow import from_table, to_table
from schemas.config import MiningConfig
from schemas.records import Generator, Lineage, PairRecord
from tasks import storage

BAND_GENERATOR = Generator(name="band-union-find", version="1")


@dataclass
class MineReport:
    uri: str
    clusters: int = 0
    edges: int = 0
    sets: int = 0
    pairs: int = 0
    groups: int = 0
    drops: dict[str, int] = field(default_factory=dict)


def pair_id(a: str, b: str) -> str:
    return hashlib.sha256(f"{a}|{b}".encode()).hexdigest()[:24]


def resolve_band(preset: TaskPreset, cfg: MiningConfig, embedder_band: tuple[float, float]) -> tuple[float, float]:
    lo, hi = preset.band or embedder_band
    if preset.band is None:
        lo = cfg.band_lo if cfg.band_lo is not None else lo
        hi = cfg.band_hi if cfg.band_hi is not None else hi
    return lo, hi


def mine_pairs(ids: list[str], x: np.ndarray, assignments: dict[str, int], root: str, preset: TaskPreset,
               cfg: MiningConfig, embedder: Generator, embedder_band: tuple[float, float],
               classifier: PairClassifier, features: str = "image",
               progress: Callable[[int], None] | None = None) -> MineReport:
    """Band union-find per cluster, re-checked pairs, then the preset's second-level check.
    `features` names what x holds (image, face or style features); it must be what the preset is defined on."""
    out = storage.join(root, "pairs", preset.name)
    marker = storage.read_marker(out)
    if marker is not None:
        return MineReport(out, **marker["counts"])
    if preset.features != features:
        raise ValueError(f"preset {preset.name} is defined on {preset.features} features; these are {features} "
                         f"features from {embedder.name}")
    lo, hi = resolve_band(preset, cfg, embedder_band)
    if classifier.path is not None:
        classifier.setup()
        if classifier.embedder != embedder.name:
            raise ValueError(f"{classifier.path} was trained on {classifier.embedder} features, "
                             f"these are {embedder.name}")
    cluster_of = np.array([assignments[i] for i in ids], np.int64)
    order = np.argsort(cluster_of, kind="stable")
    bounds = np.flatnonzero(np.diff(cluster_of[order])) + 1
    rep = MineReport(out)
    drops: Counter[str] = Counter()
    edge_rows: dict[str, list] = {"cluster": [], "source_id": [], "target_id": [], "score": []}
    set_rows: dict[str, list] = {"cluster": [], "set_id": [], "id": []}
    group_rows: dict[str, list] = {"cluster": [], "set_id": [], "input_ids": [], "target_id": []}
    cand_i, cand_j, cand_s = [], [], []
    for members in np.split(order, bounds):
        c = int(cluster_of[members[0]])
        rep.clusters += 1
        xc = x[members]
        e = band_edges(xc, lo, hi, block=cfg.block)
        drops["duplicate_above_hi"] += e.duplicates
        rep.edges += len(e)
        edge_rows["cluster"] += [c] * len(e)
        edge_rows["source_id"] += [ids[k] for k in members[e.i]]
        edge_rows["target_id"] += [ids[k] for k in members[e.j]]
        edge_rows["score"] += e.score.tolist()
        sets = disjoint_sets(len(xc), e)
        if preset.keep == "largest_set":
            drops["not_largest_set"] += max(0, len(sets) - 1)
            sets = largest_set(sets)
        for s_idx, s in enumerate(sets):
            set_rows["cluster"] += [c] * len(s)
            set_rows["set_id"] += [s_idx] * len(s)
            set_rows["id"] += [ids[k] for k in members[s]]
        rep.sets += len(sets)
        if preset.keep == "groups":
            rng = np.random.default_rng([cfg.seed, c])
            for s_idx, s in enumerate(sets):
                for inputs, target in series_groups(members[s], rng):
                    group_rows["cluster"].append(c)
                    group_rows["set_id"].append(s_idx)
                    group_rows["input_ids"].append([ids[k] for k in inputs])
                    group_rows["target_id"].append(ids[target])
        sp = pairs_from_sets(xc, sets, lo, hi, cfg.max_pairs_per_set, seed=cfg.seed + c)
        drops["set_pair_out_of_band"] += sp.out_of_band
        drops["set_pair_over_cap"] += sp.capped
        cand_i.append(members[sp.i])
        cand_j.append(members[sp.j])
        cand_s.append(sp.score)
        if progress:
            progress(len(members))
    ci = np.concatenate(cand_i) if cand_i else np.zeros(0, np.int64)
    cj = np.concatenate(cand_j) if cand_j else np.zeros(0, np.int64)
    cs = np.concatenate(cand_s) if cand_s else np.zeros(0, np.float32)
    keep, cls_scores = classifier.keep(x[ci], x[cj], preset)
    drops["classifier"] += int(np.count_nonzero(~keep))
    gens = [embedder, BAND_GENERATOR, Generator(name=classifier.name, version="1")]
    pairs = []
    for n in np.flatnonzero(keep):
        a, b = ids[ci[n]], ids[cj[n]]
        scores = {"band_cosine": float(cs[n])}
        if cls_scores is not None:
            scores["classifier"] = float(cls_scores[n])
        pairs.append(PairRecord(pair_id=pair_id(a, b), source_id=a, target_id=b, task=preset.task,
                                similarity=float(cs[n]), scores=scores,
                                lineage=Lineage(source_ids=[a, b], generators=gens, scores=scores)))
    rep.pairs, rep.groups, rep.drops = len(pairs), len(group_rows["target_id"]), dict(sorted(drops.items()))
    storage.atomic_write_parquet(storage.join(out, "edges.parquet"), pa.table(
        {**edge_rows, "score": pa.array(edge_rows["score"], pa.float32())}))
    storage.atomic_write_parquet(storage.join(out, "sets.parquet"), pa.table(set_rows))
    storage.atomic_write_parquet(storage.join(out, "pairs.parquet"), to_table(pairs, PairRecord))
    if preset.keep == "groups":
        storage.atomic_write_parquet(storage.join(out, "groups.parquet"), pa.table(group_rows))
    storage.atomic_write_bytes(storage.join(out, "drops.json"), json.dumps(rep.drops, indent=1).encode())
    counts = {k: getattr(rep, k) for k in ("clusters", "edges", "sets", "pairs", "groups", "drops")}
    storage.write_marker(out, {"counts": counts, "band": [lo, hi], "preset": preset.name})
    return rep


def load_pairs(uri: str) -> list[PairRecord]:
    if storage.read_marker(uri) is None:
        raise FileNotFoundError(f"no complete pair mining under {uri}")
    return from_table(storage.read_parquet(storage.join(uri, "pairs.parquet")), PairRecord)  # type: ignore
