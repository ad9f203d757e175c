"""Mining batches cut by rows, clusters over the budget mined in row blocks, growth mined as delta batches."""
import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from schemas.layout import PairFiles, RunLayout
from stages.corpus.cluster import cluster_generations, cluster_stages
from stages.corpus.embed import finalize_embeddings, write_partition
from stages.pairs.mine import MineStage, load_pairs
from store import storage

EMBEDDER = "offline-dct-hist"
MINING = {"embedder": "offline", "k": 3, "band_lo": 0.8, "band_hi": 0.97, "geometric_check": False,
          "block": 32, "recluster_drift": 0.5, "max_pairs_per_set": 40}


def _corpus(seed: int = 0, n: int = 900) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 24))
    x = centers[rng.integers(0, 3, n)] + 0.35 * rng.standard_normal((n, 24))
    return [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)]


def _embed(root: str, parts: list[np.ndarray]) -> None:
    """An embedding directory of the given partitions where the stages look for the offline embedder's."""
    out = RunLayout(root).embeddings(EMBEDDER)
    n = 0
    for p, x in enumerate(parts):
        ids = [hashlib.sha256(f"{n + i}".encode()).hexdigest() for i in range(len(x))]
        write_partition(storage.join(out, f"part-{p:05d}.parquet"), ids, x, EMBEDDER, "1", {}, len(x))
        n += len(x)
    storage.fs_path(storage.join(out, "_SUCCESS.json"))[0].rm(storage.join(out, "_SUCCESS.json")) \
        if storage.exists(storage.join(out, "_SUCCESS.json")) else None
    finalize_embeddings(out, len(parts), n, (0.8, 0.97))


def _mine(root: str, preset: str = "general_editing", **mining):
    cfg = RunConfig(root=root, mining={**MINING, **mining})
    ex = LocalExecutor()
    km = [ex.run(stage) for stage in cluster_stages(cfg)][-1]
    stage = MineStage(cfg, preset=preset)
    return km, ex.run(stage), stage


def _tables(uri: str) -> dict:
    return {t: pq.read_table(PairFiles(uri).table(t)).to_pylist() for t in ("edges", "sets", "pairs", "groups")}


def test_a_cluster_over_the_row_budget_mined_in_row_blocks_equals_one_pass(tmp_path):
    for preset in ("general_editing", "series_generation"):
        results = {}
        for name, rows in (("one", 100_000), ("blocks", 120)):
            root = str(tmp_path / f"{preset}-{name}")
            _embed(root, _corpus())
            _, rep, stage = _mine(root, preset, batch_rows=rows)
            results[name] = (_tables(rep.outputs[0]), rep.counts, stage._batches())
        one, blocks = results["one"], results["blocks"]
        assert len(one[2]) == 1 and len(blocks[2]) == 3  # three clusters of ~300 rows: one batch each
        assert one[0] == blocks[0] and one[1] == blocks[1]
        assert one[1]["edges"] > 1000 and (one[1]["pairs"] > 100 if preset == "general_editing" else
                                           one[1]["groups"] > 10)


def _files(paths: list[str]) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for p in paths for f in sorted(Path(p).rglob("*")) if f.is_file()}


def test_growth_assigned_to_the_centroids_adds_delta_batches_and_rewrites_none(tmp_path):
    root = str(tmp_path / "r")
    parts = _corpus()
    _embed(root, parts)
    _, first, stage = _mine(root, batch_rows=200)
    old_dirs = stage._batches()
    before = _files(old_dirs)
    old_pairs = load_pairs(first.outputs[0])
    parts.append(_corpus(seed=0, n=909)[0][900:])  # 9 more rows (1%) from the same blobs
    _embed(root, parts)
    km, grown, stage = _mine(root, batch_rows=200)
    assert km.counts["policy"].startswith("assigned 9 new rows")
    dirs = stage._batches()
    assert dirs[:len(old_dirs)] == old_dirs and _files(old_dirs) == before  # same names, same bytes
    new_dirs = dirs[len(old_dirs):]
    assert new_dirs and all(storage.read_marker(d)["generation"] == 1 for d in new_dirs)
    listed = sorted(str(p) for p in Path(storage.parent(dirs[0])).iterdir())
    assert listed == sorted(dirs)
    counts, _ = cluster_generations(km.outputs[0])
    assert counts.shape[0] == 2 and counts[1].sum() == 9
    # every clustered row is mined as new by exactly one batch; the counts add up
    assert sum(storage.read_marker(d)["new_rows"] for d in dirs) == 909
    markers = [storage.read_marker(d)["counts"] for d in dirs]
    assert grown.counts["pairs"] == sum(m["pairs"] for m in markers)
    assert grown.counts["clusters"] == 3 and grown.counts["edges"] == sum(m["edges"] for m in markers)
    # no pair twice; the old pairs kept; each delta pair holds a new row
    pairs = load_pairs(grown.outputs[0])
    ids = [p.pair_id for p in pairs]
    assert len(ids) == len(set(ids)) and set(p.pair_id for p in old_pairs) <= set(ids)
    new_ids = {hashlib.sha256(f"{i}".encode()).hexdigest() for i in range(900, 909)}
    added = [p for p in pairs if p.pair_id not in {q.pair_id for q in old_pairs}]
    assert added and all({p.source_id, p.target_id} & new_ids for p in added)
    sets = pq.read_table(PairFiles(grown.outputs[0]).table("sets")).to_pylist()
    assert len({(s["cluster"], s["set_id"], s["id"]) for s in sets}) == len(sets)
    assert {s["set_id"] >> 32 for s in sets} == {0, 1}
