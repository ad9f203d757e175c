import os

import pytest

from flows.pipelines import run_mining
from schemas.config import RunConfig
from stages.corpus.embed import EmbedStage
from runtime.executors import LocalExecutor, RayWorkers, Worker
from stages.corpus.ingest import IngestStage
from store.shards import read_manifest
from tests.runtime.toy_stage import ToyModelStage, ToyStage, calls


def test_the_local_executor_sets_up_once_times_each_item_and_sums_their_counts(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"))
    rep = LocalExecutor().run(ToyModelStage(cfg, n=4))
    assert calls(cfg.root, "setup") == {os.getpid(): ["toy-model"]}  # one worker: one setup, before item 0
    assert calls(cfg.root, "run") == {os.getpid(): [f"toy-model:{k}" for k in range(4)]}
    assert rep.counts == {"rows": 10}  # what finalize read from the items' outputs
    ex = rep.execution
    assert (ex.items, ex.ran, ex.skipped, ex.setups) == (4, 4, 0, 1)
    assert ex.counts == {"rows": 10, "by": {"item": 4}}  # the items' numeric counts, summed; text left out
    assert ex.seconds >= ex.slowest > 0 and ex.setup_seconds >= 0


def test_done_items_are_skipped_and_a_stage_whose_items_are_all_done_never_sets_up(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"))
    stage = ToyStage(cfg, n=4)
    first = LocalExecutor().run(stage)
    (tmp_path / "root/toy/done.json").unlink()  # the stage is not complete: it plans and finalizes again
    (tmp_path / "root/toy/items/item-2.json").unlink()
    again = LocalExecutor().run(ToyStage(cfg, n=4))
    assert calls(cfg.root, "run")[os.getpid()] == [f"toy:{k}" for k in range(4)] + ["toy:2"]
    assert calls(cfg.root, "setup")[os.getpid()] == ["toy", "toy"]  # a new worker set up for the item it ran
    assert (again.execution.ran, again.execution.skipped, again.execution.setups) == (1, 3, 1)
    assert again.counts == first.counts == {"rows": 10}  # skipped items count, from their outputs

    (tmp_path / "root/toy/done.json").unlink()  # every item done
    last = LocalExecutor().run(ToyStage(cfg, n=4))
    assert calls(cfg.root, "setup")[os.getpid()] == ["toy", "toy"] and len(calls(cfg.root, "run")[os.getpid()]) == 5
    assert (last.execution.ran, last.execution.skipped, last.execution.setups) == (0, 4, 0)
    assert last.counts == first.counts
    assert LocalExecutor().run(ToyStage(cfg, n=4)).execution is None  # complete: read back from its marker


def test_a_worker_whose_setup_failed_sets_up_again_before_its_next_item(tmp_path):
    class Flaky(ToyStage):
        tries = 0

        def setup(self) -> None:
            type(self).tries += 1
            if type(self).tries == 1:
                raise OSError("weights not there yet")

    worker = Worker(Flaky(RunConfig(root=str(tmp_path / "root")), n=2))
    with pytest.raises(OSError):
        worker.run(0)
    assert not worker.stage.item_done(0)
    assert worker.run(0).setup_seconds is not None and worker.run(1).setup_seconds is None
    assert Flaky.tries == 2


@pytest.mark.slow
def test_every_ray_worker_sets_up_once_and_skips_done_items(tmp_path):
    """Actors for a model stage, Ray tasks in reused worker processes for a plain one: each worker process
    calls setup() once, before its first item; items already done are skipped without setup or run."""
    import ray

    cfg = RunConfig(root=str(tmp_path / "root"))
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        model = RayWorkers(ToyModelStage(cfg, n=6), actors=2)
        got = [model.run(k) for k in range(6)]
        model.close()
        plain = RayWorkers(ToyStage(cfg, n=6), actors=1)
        plain_got = [plain.run(k) for k in range(6)]
        plain_again = [plain.run(k) for k in range(6)]  # the same group: every item done
        done = RayWorkers(ToyModelStage(cfg, n=6), actors=2)  # new actors over done items
        done_got = [done.run(k) for k in range(6)]
        done.close()
    finally:
        ray.shutdown()
    setups = calls(cfg.root, "setup")
    actor_pids = {g["worker"]["pid"] for g in got}
    assert len(actor_pids) == 2 and os.getpid() not in actor_pids
    assert {p: e for p, e in setups.items() if "toy-model" in e} == {p: ["toy-model"] for p in actor_pids}
    task_pids = {g["worker"]["pid"] for g in plain_got}
    assert {p: e for p, e in setups.items() if "toy" in e} == {p: ["toy"] for p in task_pids}
    assert sum(g["setup_seconds"] is not None for g in got + plain_got) == len(actor_pids) + len(task_pids)
    assert not any(g["skipped"] for g in got + plain_got) and all(g["seconds"] > 0 for g in got + plain_got)
    assert all(g["skipped"] and g["setup_seconds"] is None for g in plain_again + done_got)
    assert sorted(e for es in calls(cfg.root, "run").values() for e in es) == sorted(
        [f"toy-model:{k}" for k in range(6)] + [f"toy:{k}" for k in range(6)])  # each item ran once


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
def test_items_run_on_ray_workers_with_the_declared_resources(demo_corpus, tmp_path):
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
    assert pids[0] == pids[2]  # the same actor served items 0 and 2: its model was loaded once
    assert all(g["worker"]["resources"] == {"CPU": 0.5} for g in got)  # the embedder's declared resources
    assert ingest_worker["resources"] == {"CPU": 1.0} and ingest_worker["pid"] != os.getpid()
    assert sum(g["counts"]["embedded"] for g in got) == sum(g["counts"]["records"] for g in got)
    assert all(stage.item_done(k) for k in range(n))


@pytest.mark.slow
def test_items_of_one_stage_run_on_both_nodes_of_a_two_node_cluster(demo_corpus, tmp_path):
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
        with ThreadPoolExecutor(4) as pool:  # as the executor submits them: several items in flight
            got = list(pool.map(workers.run, range(n)))
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    used = {g["worker"]["node"] for g in got}
    assert len(nodes) == 2 and used == nodes  # both nodes ran items of this stage
    assert LocalExecutor().run(stage).counts["seen"] == sum(g["counts"]["seen"] for g in got)


@pytest.mark.slow
def test_the_prefect_executor_reports_item_timings_and_sets_up_once_per_actor(tmp_path, prefect_results):
    from runtime.executors import PrefectRayExecutor

    cfg = RunConfig(root=str(tmp_path / "root"))
    ex = PrefectRayExecutor(items_in_flight=2, model_actors=2)
    try:
        rep = ex.run(ToyModelStage(cfg, n=4))
        (tmp_path / "root/toy-model/done.json").unlink()  # every item done: finalized again, nothing set up
        again = ex.run(ToyModelStage(cfg, n=4))
    finally:
        ex.close()
    setups = calls(cfg.root, "setup")
    assert 1 <= len(setups) <= 2 and all(e == ["toy-model"] for e in setups.values())  # once per actor
    assert os.getpid() not in setups
    assert (rep.execution.items, rep.execution.ran, rep.execution.setups) == (4, 4, len(setups))
    assert rep.execution.counts["rows"] == rep.counts["rows"] == 10 and rep.execution.seconds > 0
    assert (again.execution.ran, again.execution.skipped, again.execution.setups) == (0, 4, 0)
    assert again.counts == rep.counts
    assert sum(len(e) for e in calls(cfg.root, "run").values()) == 4
