import os

import pytest

from flows.pipelines import run_mining
from schemas.config import RunConfig
from tasks.embed import EmbedStage
from tasks.executors import LocalExecutor, RayWorkers
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


@pytest.mark.slow
def test_units_of_one_stage_run_on_both_nodes_of_a_two_node_cluster(demo_corpus, tmp_path):
    """A head and a second node (separate raylets, as `ray start --head` + `ray start --address` make them),
    one CPU each: the ingest partitions of one run are spread over both."""
    from concurrent.futures import ThreadPoolExecutor

    import ray
    from ray.cluster_utils import Cluster

    corpus, _ = demo_corpus
    cfg = RunConfig(root=str(tmp_path / "root"), ingest={"partition_files": 16, "chunk_size": 16, "workers": 1})
    stage = IngestStage(cfg, source=str(corpus))
    n = stage.plan()
    assert n >= 4
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    try:
        cluster.add_node(num_cpus=1, resources={"second": 1})
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        workers = RayWorkers(stage, actors=1)
        with ThreadPoolExecutor(4) as pool:  # as the executor submits them: several units in flight
            got = list(pool.map(workers.run, range(n)))
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    used = {g["worker"]["node"] for g in got}
    assert len(nodes) == 2 and used == nodes  # both nodes ran units of this stage
    assert LocalExecutor().run(stage).counts["seen"] == sum(g["counts"]["seen"] for g in got)
