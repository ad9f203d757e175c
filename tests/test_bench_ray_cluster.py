"""The benchmarks' local two-node Ray cluster (bench/_ray_cluster.py): the pipeline joins it through
RAY_ADDRESS on loopback and a stage's items run on both nodes."""
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench._ray_cluster import alive_nodes, two_node_cluster
from runtime.executors import RayWorkers
from runtime.stage import Execution, ItemReport
from schemas.config import RunConfig
from tests.runtime.toy_stage import ToyStage


class Slow(ToyStage):
    """Items that take long enough for both single-CPU nodes to be busy at once."""

    name = "toy-slow"
    resources = ToyStage.resources.model_copy(update={"cpus": 1})

    def run(self, k: int) -> ItemReport:
        import time

        time.sleep(0.5)
        return super().run(k)


@pytest.mark.slow
def test_the_items_of_one_stage_run_on_both_nodes_and_the_cluster_goes_away(tmp_path, monkeypatch):
    import ray

    from runtime.ray_pool import ensure_ray, stop_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    stage = Slow(RunConfig(root=str(tmp_path / "root")), n=6)
    with two_node_cluster(cpus_per_node=1, object_store_mb=200) as address:
        assert os.environ["RAY_ADDRESS"] == address and address.startswith("127.0.0.1:")
        ensure_ray()
        nodes = alive_nodes()
        assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
        workers = RayWorkers(stage, actors=1)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(workers.run, range(6)))
        stop_ray()
    assert "RAY_ADDRESS" not in os.environ and not ray.is_initialized()
    ex = Execution.of([ItemReport.model_validate(g) for g in got])
    assert len(nodes) == 2 and ex.nodes == 2 and {g["node"] for g in got} == nodes
    assert ex.peak_rss_mb > 0  # measured in the Ray worker processes
