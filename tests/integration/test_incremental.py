"""A mining run, files added to the source, a second run, a third: the way a user grows a corpus."""

import json
from pathlib import Path

import numpy as np
import pytest

from stages.corpus.demo_corpus import generate_variants

CFG = {"ingest": {"partition_files": 100, "chunk_size": 50},
       "mining": {"partition_size": 100, "k": 12, "clusters_per_batch": 1},
       "shards": {"maxcount": 20},
       # condition maps on a fraction of the images (chosen by id), in parts of 32 catalog rows
       "synthesis": {"tasks": ["analysis_canny", "control_canny", "analysis_mosaic"], "fraction": 0.3,
                     "partition_size": 32}}


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_new_source_files_are_mined_without_redoing_the_rest(tmp_path, prefect_results):
    from flows.pipelines import mine_flow
    from stages.corpus.cluster import load_assignments
    from stages.corpus.embed import load_embeddings
    from stages.corpus.ingest import load_catalog
    from store.shards import read_manifest

    corpus, root = tmp_path / "corpus", tmp_path / "root"
    generate_variants(corpus, 300)
    first = mine_flow(source=str(corpus), root=str(root), config=CFG)
    assert first["ingest"]["accepted"] == 300
    before = _files(root)
    old_ids = [r.id for r in load_catalog(str(root))]
    old_assign = load_assignments(str(root / "clusters/offline-dct-hist"))

    generate_variants(corpus, 5, start=300)  # five new files, of five of the demo photos
    second = mine_flow(source=str(corpus), root=str(root), config=CFG)
    after = _files(root)

    # ingest: one new partition, the three old ones untouched; old rows keep their places
    plan = json.loads((root / "catalog/plan.json").read_text())
    assert plan["generations"] == [3, 4] and second["ingest"]["seen"] == 305
    for k in range(3):
        for what in ("images", "quarantine"):
            f = f"catalog/parts/part-{k:05d}.{what}.parquet"
            assert after[f] == before[f]
    ids = [r.id for r in load_catalog(str(root))]
    assert ids[:300] == old_ids and len(ids) == 305
    # embedding: the three full partitions kept, the new rows in their own partition; every row embedded
    assert [after[f"embeddings/offline-dct-hist/part-{k:05d}.parquet"] for k in range(3)] == \
           [before[f"embeddings/offline-dct-hist/part-{k:05d}.parquet"] for k in range(3)]
    emb_ids, x, marker = load_embeddings(str(root / "embeddings/offline-dct-hist"))
    assert emb_ids == ids and (marker["partitions"], marker["embedded"]) == (4, 305)
    # K-means: the new rows joined existing clusters, the old rows kept theirs
    assert second["clusters"]["policy"].startswith("assigned 5 new rows to the existing 12 centroids")
    assign = load_assignments(str(root / "clusters/offline-dct-hist"))
    assert all(assign[i] == c for i, c in old_assign.items())
    touched = {assign[i] for i in ids[300:]}
    # mining: every batch kept as it was; the new rows mined in one delta batch per cluster they joined
    def batches(files):
        return {f: t for f, t in files.items() if f.startswith("pairs/general_editing/batches/batch-")}
    old_b, new_b = batches(before), batches(after)
    assert {f: new_b.get(f) for f in old_b} == old_b  # names and files unchanged
    dirs = {f.split("/")[3] for f in old_b}
    delta = {f.split("/")[3] for f in new_b} - dirs
    assert len(dirs) == 12 and len(delta) == len(touched) and 1 <= len(touched) <= 5
    # instructions: one item per mined batch; the earlier batches' instructed files are untouched
    for b in dirs:
        f = f"pairs/general_editing/instructed/{b}/pairs.parquet"
        assert f in before and after[f] == before[f]
    # shards: one packing unit per instructed batch: every earlier tar keeps its bytes, the new tars are the
    # delta batches' only
    shards = root / "shards/mined-general_editing"
    rows = read_manifest(str(shards))
    assert sum(r.samples for r in rows) == second["general_editing"]["shards"]["samples"]
    instructed = second["general_editing"]["instructions"]
    gate = sum(n for reasons in second["general_editing"]["shards"]["supervision_dropped"].values()
               for n in reasons.values())  # pairs the supervision gate dropped, by task and reason
    assert second["general_editing"]["shards"]["samples"] + gate == instructed["with_instruction"]
    assert instructed["pairs"] == instructed["with_instruction"] + instructed.get("without_instruction", 0)
    kept_shards = second["general_editing"]["shards"]["kept_shards"]
    old_tars = {f.split("/")[2] for f in before if f.startswith("shards/mined-general_editing/") and f.endswith(".tar")}
    new_tars = {f.split("/")[2] for f in after if f.startswith("shards/mined-general_editing/") and f.endswith(".tar")}
    assert new_tars == {r.shard for r in rows} and old_tars < new_tars and kept_shards == len(old_tars)
    for t in old_tars:
        assert after[f"shards/mined-general_editing/{t}"] == before[f"shards/mined-general_editing/{t}"]
    assert all(any(t.startswith(f"shard-{b}-") for b in delta) for t in new_tars - old_tars)
    assert second["general_editing"]["shards"]["landed_now"]
    # every shard set: no tar written by the first run is rewritten or removed (synthesis: the new images are
    # a new catalog generation, so new parts and new units only)
    tars = [f for f in before if f.startswith("shards/") and f.endswith(".tar")]
    assert {f.split("/")[1] for f in tars} == {"mined-general_editing", "mined-synthesis"}
    assert all(after.get(f) == before[f] for f in tars)
    synth = read_manifest(str(root / "shards/mined-synthesis"))
    assert {r.shard for r in synth} >= {f.split("/")[2] for f in tars if f.startswith("shards/mined-synthesis/")}
    assert sum(r.samples for r in synth) == second["synthesis"]["shards"]["samples"] > 0

    # a third run over the same source: nothing runs, no file is rewritten
    third = mine_flow(source=str(corpus), root=str(root), config=CFG)
    assert _files(root) == after
    assert not third["general_editing"]["shards"]["landed_now"]
    assert np.isfinite(x).all()
