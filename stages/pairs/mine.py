"""Mine pairs per cluster for one task preset, in batches cut by rows: <root>/pairs/<preset>/

    batches/batch-NNNNN-<digest>/   one work item (stages/pairs/batching.py: a cluster range of one
                           generation of rows; deltas after growth): edges, sets, pairs, groups, drops + marker
    edges.parquet          cluster, source_id, target_id, score   (every in-band edge: re-tune without recomputing)
    sets.parquet           cluster, set_id, id                     (disjoint sets of two or more)
    pairs.parquet          PairRecord rows that passed every check
    groups.parquet         cluster, set_id, input_ids, target_id   (series / reference presets)
    drops.json             counts by reason; then the marker

Series / reference groups are tight (mining/pairs/groups.py): every input within the band of the target and of
each other, and (mining.geometric_check) confirmed by keypoint geometry to show one subject; a target no tight
group forms around is dropped (incoherent_group). General-editing pairs failing the geometric confirmation are
dropped (incoherent_pair). Counts reconcile per batch: candidate pairs = pairs + classifier + incoherent_pair;
members of the sets of a group preset = members grouped + incoherent_group + group_leftover.

A batch whose marker exists is skipped; the merge runs when every batch is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from mining.pairs.band import band_edges, band_edges_rows, disjoint_sets, pairs_from_sets
from mining.pairs.geometric import Verifier
from mining.pairs.groups import tight_groups
from typing import TYPE_CHECKING
from mining.pairs.presets import TaskPreset, classifier_path, largest_set
from schemas.arrow import from_table
from schemas.config import MiningConfig
from schemas.records import Generator, Lineage, PairRecord
from store import storage
from schemas.layout import MARKER, PAIR_TABLES, PairFiles, RunLayout
from stages.pairs.batching import (Batch, LayoutRows, batch_slices, file_digest, plan_batches, read_ids, read_slices,
                                   write_tables)
from stages.pairs.geometry import GEOMETRIC_GENERATOR, PAIR_GEOMETRY_TASKS, catalog_verifier, reconcile, uses_geometry
from runtime.stage import ItemReport, Resources, Stage, StageReport

if TYPE_CHECKING:  # torch is imported by the items that classify, never by the flow process that plans them
    from mining.pairs.classifier import PairClassifier

BAND_GENERATOR = Generator(name="band-union-find", version="1")
_TABLES = PAIR_TABLES


@dataclass
class MineReport:
    uri: str
    clusters: int = 0
    edges: int = 0
    sets: int = 0
    pairs: int = 0
    groups: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict:
        return {k: getattr(self, k) for k in ("clusters", "edges", "sets", "pairs", "groups", "drops")}


def pair_id(a: str, b: str) -> str:
    return hashlib.sha256(f"{a}|{b}".encode()).hexdigest()[:24]


def resolve_band(preset: TaskPreset, cfg: MiningConfig, embedder_band: tuple[float, float]) -> tuple[float, float]:
    lo, hi = preset.band or embedder_band
    if preset.band is None:
        lo = cfg.band_lo if cfg.band_lo is not None else lo
        hi = cfg.band_hi if cfg.band_hi is not None else hi
    return lo, hi


def classifier_file(models_dir: str, mc: MiningConfig, preset: TaskPreset, strict: bool = True) -> Path | None:
    """The head a preset applies: `mining.pair_classifier` when set, else the task's own head under
    models_dir (`aceforge train-pair-classifier --task`) when trained, else none (pass-through); a preset
    that needs one refuses without it."""
    if preset.check != "classifier":
        return None
    path = Path(models_dir) / mc.pair_classifier if mc.pair_classifier else classifier_path(models_dir, preset.task)
    if path.is_file() or mc.pair_classifier:
        return path
    if preset.requires_classifier and strict:
        raise ValueError(f"preset {preset.name} needs a trained {preset.task} pair classifier and there is none at "
                         f"{path}: label pairs (`aceforge label PAIRS --task {preset.task}`), then "
                         f"`aceforge train-pair-classifier --task {preset.task}`")
    return None


def check_inputs(preset: TaskPreset, embedder: Generator, classifier: PairClassifier, features: str) -> None:
    if preset.features != features:
        raise ValueError(f"preset {preset.name} is defined on {preset.features} features; these are {features} "
                         f"features from {embedder.name}")
    if classifier.path is not None:
        classifier.setup()
        if classifier.embedder != embedder.name:
            raise ValueError(f"{classifier.path} was trained on {classifier.embedder} features, "
                             f"these are {embedder.name}")


def mine_batch(ids: list[str], x, cluster_of: np.ndarray, out: str, preset: TaskPreset,
               cfg: MiningConfig, embedder: Generator, band: tuple[float, float], classifier: PairClassifier,
               progress: Callable[[int], None] | None = None, verifier: Verifier | None = None,
               first_new: dict[int, int] | None = None, generation: int = 0,
               row_block: int | None = None) -> MineReport:
    """Band union-find over one batch's rows (grouped by cluster, `cluster_of` per row), re-checked pairs,
    the second-level check, tight groups; the batch's files and marker. `verifier` (over these ids) confirms
    groups and general-editing pairs by geometry; None: not confirmed. `x`: the rows, or a LayoutRows
    (stages/pairs/batching.py) read `row_block` rows at a time (a cluster over the batch's row budget).
    A delta (`generation` >= 1): per cluster, local rows >= first_new[cluster] are new; only edges and
    pairs touching a new row are mined (see docs/pairs.md). Memory: the batch's rows, or two row blocks and
    the largest set's rows (and the verifier's bounded caches)."""
    marker = storage.read_marker(out)
    if marker is not None:
        return MineReport(out, **marker["counts"])
    lo, hi = band
    rows = np.arange(len(ids), dtype=np.int64)
    cluster_of = np.asarray(cluster_of, np.int64)
    if len(rows) and np.any(np.diff(cluster_of) < 0):
        raise ValueError(f"{out}: rows must be grouped by cluster")
    if uses_geometry(preset, cfg) != (verifier is not None):
        raise ValueError(f"{out}: preset {preset.name} with geometric_check={cfg.geometric_check} "
                         f"{'needs' if verifier is None else 'takes no'} verifier")
    rep = MineReport(out)
    set_members = 0
    drops: Counter[str] = Counter()
    tables: dict[str, dict[str, list]] = {
        "edges": {"cluster": [], "source_id": [], "target_id": [], "score": []},
        "sets": {"cluster": [], "set_id": [], "id": []},
        "groups": {"cluster": [], "set_id": [], "input_ids": [], "target_id": []},
    }
    cand_i, cand_j, cand_s = [], [], []
    for members in np.split(rows, np.flatnonzero(np.diff(cluster_of)) + 1) if len(rows) else []:
        c = int(cluster_of[members[0]])
        f = (first_new or {}).get(c, 0)
        rep.clusters += 0 if f else 1  # a delta counts the clusters it is the first to mine
        xc = x[members] if isinstance(x, np.ndarray) else x.view(int(members[0]), int(members[-1]) + 1)
        if f or not isinstance(xc, np.ndarray):
            load = xc.rows if not isinstance(xc, np.ndarray) else (lambda a, b, xc=xc: xc[a:b])
            e = band_edges_rows(load, len(xc), lo, hi, block=cfg.block, row_block=row_block, first_new=f)
        else:
            e = band_edges(xc, lo, hi, block=cfg.block)
        drops["duplicate_above_hi"] += e.duplicates
        rep.edges += len(e)
        t = tables["edges"]
        t["cluster"] += [c] * len(e)
        t["source_id"] += [ids[k] for k in members[e.i]]
        t["target_id"] += [ids[k] for k in members[e.j]]
        t["score"] += e.score.tolist()
        sets = disjoint_sets(len(xc), e)
        if preset.keep == "largest_set":
            drops["not_largest_set"] += max(0, len(sets) - 1)
            sets = largest_set(sets)
        for s_idx, s in enumerate(sets):
            tables["sets"]["cluster"] += [c] * len(s)
            tables["sets"]["set_id"] += [(generation << 32) + s_idx] * len(s)
            tables["sets"]["id"] += [ids[k] for k in members[s]]
        rep.sets += len(sets)
        if preset.keep == "groups":
            rng = np.random.default_rng([cfg.seed, c])
            g = tables["groups"]
            for s_idx, s in enumerate(sets):
                rows_s = members[s]
                same = None if verifier is None else \
                    (lambda a, b, r=rows_s: verifier.same(ids[r[a]], ids[r[b]]))
                sg = tight_groups(xc[s], lo, hi, rng, same)
                set_members += len(s)
                drops["incoherent_group"] += sg.incoherent
                drops["group_leftover"] += sg.leftover
                for inputs, target in sg.groups:
                    if f and max(int(s[inputs].max()), int(s[target])) < f:
                        drops["group_earlier_rows"] += len(inputs) + 1  # formed of rows mined before
                        continue
                    g["cluster"].append(c)
                    g["set_id"].append((generation << 32) + s_idx)
                    g["input_ids"].append([ids[k] for k in rows_s[inputs]])
                    g["target_id"].append(ids[rows_s[target]])
        sp = pairs_from_sets(xc, sets, lo, hi, cfg.max_pairs_per_set, seed=cfg.seed + c, first_new=f)
        drops["set_pair_out_of_band"] += sp.out_of_band
        drops["set_pair_over_cap"] += sp.capped
        cand_i.append(members[sp.i])
        cand_j.append(members[sp.j])
        cand_s.append(sp.score)
        if progress:
            progress(len(members))
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    ci, cj, cs = cat(cand_i, np.int64), cat(cand_j, np.int64), cat(cand_s, np.float32)
    keep, cls_scores = classifier.keep(x[ci], x[cj], preset) if len(ci) else (np.zeros(0, bool), None)
    drops["classifier"] += int(np.count_nonzero(~keep))
    gens = [embedder, BAND_GENERATOR, Generator(name=classifier.name, version="1")]
    pair_geometry = verifier is not None and preset.task in PAIR_GEOMETRY_TASKS
    if pair_geometry:
        gens.append(GEOMETRIC_GENERATOR)
        drops["incoherent_pair"] += 0  # reported (as 0) whenever the check ran
    pairs = []
    for n in np.flatnonzero(keep):
        a, b = ids[ci[n]], ids[cj[n]]
        scores = {"band_cosine": float(cs[n])}
        if cls_scores is not None:
            scores["classifier"] = float(cls_scores[n])
        if pair_geometry:
            inliers = verifier.inliers(a, b)
            if inliers < verifier.min_inliers:
                drops["incoherent_pair"] += 1
                continue
            scores["geometric_inliers"] = float(inliers)
        pairs.append(PairRecord(pair_id=pair_id(a, b), source_id=a, target_id=b, task=preset.task,
                                similarity=float(cs[n]), scores=scores,
                                lineage=Lineage(source_ids=[a, b], generators=gens, scores=scores)))
    rep.pairs, rep.groups, rep.drops = len(pairs), len(tables["groups"]["target_id"]), dict(sorted(drops.items()))
    reconcile(out, len(ci), rep.pairs, set_members, sum(len(i) + 1 for i in tables["groups"]["input_ids"]), drops)
    write_tables(out, tables, pairs)
    new_rows = len(ids) - sum((first_new or {}).get(int(c), 0) for c in np.unique(cluster_of))
    storage.write_marker(out, {"counts": rep.counts(), "rows": len(ids), "new_rows": int(new_rows),
                               "generation": generation})
    return rep


def merge_batches(root: str, preset: TaskPreset, batches: list[str], band: tuple[float, float],
                  points: int | None = None) -> MineReport:
    """Concatenate the complete batches (their directories, in order) into the preset's tables, streamed one
    batch's tables at a time, sum the
    counts, write the marker. `points`: the clustered rows, each of which one batch must have mined as new."""
    n_batches = len(batches)
    out = RunLayout(root).pairs(preset.name)
    marker = storage.read_marker(out)
    if marker is not None:
        return MineReport(out, **marker["counts"])
    rep = MineReport(out)
    drops: Counter[str] = Counter()
    empty: dict[str, pa.Table] = {}  # a table no batch has rows of: written as the first batch's (empty) one
    with contextlib.ExitStack() as stack:  # one batch's tables in memory at a time; temporary files go on error
        sinks: dict[str, storage.ParquetSink] = {}
        for b in batches:
            bm = storage.read_marker(b)
            if bm is None:
                raise RuntimeError(f"batch {b} is not complete: run its mining item first")
            c = bm["counts"]
            for key in ("clusters", "edges", "sets", "pairs", "groups"):
                setattr(rep, key, getattr(rep, key) + c[key])
            drops.update(c["drops"])
            for t in _TABLES:
                tab = storage.read_parquet(PairFiles(b).table(t))
                if t not in sinks:
                    if not tab.num_rows:
                        empty.setdefault(t, tab)
                        continue
                    sinks[t] = stack.enter_context(storage.ParquetSink(PairFiles(out).table(t), tab.schema))
                sinks[t].write(tab.cast(sinks[t].schema))
    rep.drops = dict(sorted(drops.items()))
    mined = sum(storage.read_marker(b).get("new_rows", 0) for b in batches)
    if points is not None and mined != points:
        raise RuntimeError(f"{out}: the batches mined {mined} rows as new, the clustering holds {points}")
    if n_batches == 0:
        write_tables(out, {t: {} for t in _TABLES}, [])
    for t, tab in empty.items():
        if t not in sinks:
            storage.atomic_write_parquet(PairFiles(out).table(t), tab)
    storage.atomic_write_bytes(PairFiles(out).drops, json.dumps(rep.drops, indent=1).encode())
    storage.write_marker(out, {"counts": rep.counts(), "band": list(band), "preset": preset.name,
                               "batches": n_batches})
    return rep


def load_pairs(uri: str) -> list[PairRecord]:
    if storage.read_marker(uri) is None:
        raise FileNotFoundError(f"no complete pair mining under {uri}")
    return from_table(storage.read_parquet(PairFiles(uri).pairs), PairRecord)  # type: ignore


class MineStage(Stage):
    """<root>/pairs/<preset>/: band union-find per cluster, one item per batch of at most
    `mining.batch_rows` rows and `mining.clusters_per_batch` clusters (reading only their rows from the
    clusters' by-cluster layout; a larger cluster in row blocks), then the merge (finalize). A batch's
    directory is named by what it mines; rows a growth assigned to the existing centroids go to new delta
    batches, and the existing ones are kept as they are."""

    name = "mine"
    item_name = "batch"
    resources = Resources(cpus=1.0)
    always, scope, key, config_section, ui_report = True, "preset", "mined", "mining", "pairs"
    needs = ("kmeans",)

    def summary_entry(self, counts: dict, ran_now: bool) -> dict:
        return {k: v for k, v in counts.items() if k != "band"}

    @classmethod
    def summary(cls, m: dict, group: dict, name: str) -> str:
        return (f"preset {name}: {m['clusters']} clusters, {m['edges']} band edges, {m['sets']} sets, "
                f"{m['pairs']} pairs, {m['groups']} groups; drops {m['drops']}")

    @property
    def label(self) -> str:
        return f"mine-{self.params['preset']}"

    @property
    def preset(self) -> TaskPreset:
        from mining.pairs.presets import preset

        return preset(self.params["preset"])

    @property
    def out(self) -> str:
        return self.layout.pairs(self.preset.name)

    def _inputs(self) -> tuple[str, str]:
        from mining.models.embedders import make_embedder

        emb = self.layout.embeddings(make_embedder(self.cfg.mining.embedder, self.cfg.models_dir).name)
        return emb, self.layout.clusters(emb.rstrip("/").rsplit("/", 1)[-1])

    def inputs(self) -> list[str]:
        return [self._inputs()[1]]

    def settings(self) -> dict:
        mc = self.cfg.mining
        emb = storage.read_marker(self._inputs()[0]) or {}
        return {"preset": dataclasses.asdict(self.preset),
                "band": resolve_band(self.preset, mc, tuple(emb.get("band") or (0.0, 1.0))),
                "max_pairs_per_set": mc.max_pairs_per_set, "seed": mc.seed, "classifier": mc.pair_classifier,
                "classifier_sha256": file_digest(clf) if (clf := classifier_file(self.cfg.models_dir, mc,
                                                                                  self.preset, False)) else None,
                "clusters_per_batch": mc.clusters_per_batch, "batch_rows": mc.batch_rows,
                "geometric_min_inliers": self.cfg.supervision.group_min_inliers
                if uses_geometry(self.preset, mc) else None}

    def _batches(self) -> list[str]:
        """The batch directories of the current clustering, named by their content (worked out once per
        stage object: item_outputs(k) asks for it per item). Every current batch, deltas included."""
        if getattr(self, "_batch_dirs", None) is None:
            self._batch_dirs = self._name_batches()
        return self._batch_dirs

    def _plan(self) -> tuple[list[Batch], np.ndarray]:
        from stages.corpus.cluster import cluster_generations

        if getattr(self, "_batch_plan", None) is None:
            counts, digests = cluster_generations(self._inputs()[1])
            mc = self.cfg.mining
            self._batch_plan = plan_batches(counts, mc.batch_rows, mc.clusters_per_batch), counts, digests
        return self._batch_plan[:2]

    def _name_batches(self) -> list[str]:
        """A batch is named by what it mines: the settings, the K-means epoch, its generation and clusters,
        and their rows (counts and id digests) of the generations it reads, never of later ones."""
        cl = self._inputs()[1]
        batches, counts = self._plan()
        digests = self._batch_plan[2]
        epoch = storage.read_marker(cl)["epoch"]
        base = json.dumps(self.settings(), sort_keys=True)
        out = []
        for k, b in enumerate(batches):
            g, c0, c1 = b.generation, b.c0, b.c1
            sizes = counts[: g + 1, c0:c1].tolist()
            members = [[int(d) for d in row] for row in digests[: g + 1, c0:c1]]  # which ids, not only how many
            key = [base, epoch, c0, c1, sizes, members] if g == 0 else [base, epoch, g, c0, c1, sizes, members]
            fp = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]
            out.append(f"{self.layout.pair_batch(self.preset.name, k)}-{fp}")
        return out

    def plan(self) -> int:
        return len(self._batches())

    def item_outputs(self, k: int) -> list[str]:
        return [self.layout.marker(self._batches()[k])]

    def run(self, k: int) -> ItemReport:
        from stages.corpus.cluster import cluster_offsets

        mc, preset = self.cfg.mining, self.preset
        emb_uri, cl_uri = self._inputs()
        marker = storage.read_marker(emb_uri)
        from mining.pairs.classifier import PairClassifier

        classifier = PairClassifier(classifier_file(self.cfg.models_dir, mc, preset))
        gen = Generator(name=marker["embedder"], version=marker["version"])
        check_inputs(preset, gen, classifier, "image")
        offsets = cluster_offsets(cl_uri)
        batches, counts = self._plan()
        b = batches[k]
        slices = batch_slices(b, offsets, counts)
        rows = sum(s.hi - s.lo for s in slices)
        cluster_of = np.repeat([s.cluster for s in slices], [s.hi - s.lo for s in slices]).astype(np.int64)
        if rows > mc.batch_rows:  # one cluster over the row budget: mined in row blocks
            (s,) = slices
            ids, x = read_ids(cl_uri, s.lo, s.hi), LayoutRows(cl_uri, s.lo, s.hi, chunk=mc.batch_rows // 2)
        else:
            ids, x = read_slices(cl_uri, slices)
        band = resolve_band(preset, mc, tuple(marker["band"]))
        verifier = catalog_verifier(self.cfg.root, self.cfg.supervision.group_min_inliers,
                                    self.cfg.ingest.max_pixels)(ids) if uses_geometry(preset, mc) else None
        rep = mine_batch(ids, x, cluster_of, self._batches()[k], preset, mc, gen, band, classifier,
                         verifier=verifier, first_new={s.cluster: s.first_new for s in slices},
                         generation=b.generation, row_block=mc.batch_rows // 2)
        return ItemReport(stage=self.label, item=k, counts=rep.counts())

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def finalize(self, n: int) -> StageReport:
        band = resolve_band(self.preset, self.cfg.mining, tuple(storage.read_marker(self._inputs()[0])["band"]))
        batches = self._batches()
        if len(batches) != n:
            raise RuntimeError(f"{self.label}: {n} items ran but the clustering now has {len(batches)} batches")
        points = storage.read_marker(self._inputs()[1])["points"]
        merge_batches(self.cfg.root, self.preset, batches, band, points)
        self._remove_old_batches(set(batches))
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def _remove_old_batches(self, keep: set[str]) -> None:
        """Batch directories of an earlier clustering (this stage wrote them): removed once merged."""
        parent = storage.parent(self.layout.pair_batch(self.preset.name, 0))
        fs, path = storage.fs_path(parent)
        for p in fs.ls(path, detail=False) if fs.exists(path) else []:
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if _BATCH_DIR.fullmatch(name) and storage.join(parent, name) not in keep and _only_batch_files(fs, p):
                fs.rm(p, recursive=True)

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        return None if m is None else StageReport(stage=self.label, items=m["batches"], outputs=[self.out],
                                                  counts={**m["counts"], "band": m["band"]})


_BATCH_FILES = {PairFiles.table_name(t) for t in _TABLES} | {MARKER}


def _only_batch_files(fs, path: str) -> bool:
    """A folder holding only what a mining batch writes (and its temporary names): safe to remove."""
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return all(n.split(storage.TMP_TAG)[0] in _BATCH_FILES for n in names)


_BATCH_DIR = PairFiles.BATCH
