import os

import pytest

from flows.pipelines import run_mining
from schemas.config import RunConfig
from tasks.embed import EmbedStage
from tasks.executors import LocalExecutor, PrefectRayExecutor, RayWorkers
from tasks.ingest import IngestStage
from tasks.shards import read_manifest


@pytest.mark.slow
def test_both_executors_run_the_same_stages_to_the_same_shards(demo_corpus, tmp_path, prefect_results):
    from flows.pipelines import mine_flow

    corpus, _ = demo_corpus
    writer = {"kind": "demo", "corpus": str(corpus)}
    cfg = {"mining": {"k": 3, "clusters_per_batch": 1}, "shards": {"maxcount": 8}}
    local = run_mining(LocalExecutor(), RunConfig(root=str(tmp_path / "local"), **cfg), str(corpus), writer)
    flow = mine_flow(source=str(corpus), root=str(tmp_path / "flow"), config=cfg, writer=writer)
    for key in ("ingest", "embeddings", "clusters"):
        assert {k: v for k, v in local[key].items() if k != "catalog_uri"} == \
               {k: v for k, v in flow[key].items() if k != "catalog_uri"}
    assert local["general_editing"]["mined"] == flow["general_editing"]["mined"]
    a, b = (read_manifest(r["general_editing"]["shards"]["uri"]) for r in (local, flow))
    assert [(r.shard, r.samples, r.sha256) for r in a] == [(r.shard, r.samples, r.sha256) for r in b]
    assert sum(r.samples for r in a) > 0


@pytest.mark.slow
def test_units_run_on_ray_workers_with_the_declared_resources(demo_corpus, tmp_path):
    import ray

    corpus, _ = demo_corpus
    cfg = RunConfig(root=str(tmp_path / "root"), mining={"partition_size": 40})
    LocalExecutor().run(IngestStage(cfg, source=str(corpus)))
    stage = EmbedStage(cfg)
    n = stage.plan()
    assert n >= 3
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        workers = RayWorkers(stage, actors=2)  # a model stage: actors, each set up once
        got = [workers.run(k) for k in range(n)]
        workers.close()
        plain = RayWorkers(IngestStage(cfg, source=str(corpus)), actors=1)  # a plain stage: Ray tasks
        ingest_worker = plain.run(0)["worker"]
    finally:
        ray.shutdown()
    pids = [g["worker"]["pid"] for g in got]
    assert os.getpid() not in pids and len(set(pids)) == 2  # two actors, round robin
    assert pids[0] == pids[2]  # the same actor served units 0 and 2: its model was loaded once
    assert all(g["worker"]["resources"] == {"CPU": 0.5} for g in got)  # the embedder's declared resources
    assert ingest_worker["resources"] == {"CPU": 1.0} and ingest_worker["pid"] != os.getpid()
    assert sum(g["counts"]["embedded"] for g in got) == sum(g["counts"]["records"] for g in got)
    assert all(stage.unit_done(k) for k in range(n))
