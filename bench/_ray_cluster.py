"""A local Ray cluster of two nodes (two raylets on this machine, as `ray start --head` and a second
`ray start --address` make them) for benchmarks: the pipeline joins it through RAY_ADDRESS
(runtime/ray_pool.py), so its items spread over both nodes as they would over two machines.

    with two_node_cluster(cpus_per_node=1) as address:
        ...  # ensure_ray() connects to `address`

The nodes are this process's children and bind loopback; leaving the block stops them (only them) and puts
RAY_ADDRESS back as it was.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def two_node_cluster(cpus_per_node: int = 1, object_store_mb: int = 1024) -> Iterator[str]:
    import ray
    from ray.cluster_utils import Cluster

    from runtime.lifeline import guard
    from runtime.ray_pool import _loopback_node

    guard()  # the nodes go with this process however it ends
    if ray.is_initialized():
        ray.shutdown()
    node = dict(num_cpus=cpus_per_node, object_store_memory=object_store_mb * 2**20, node_ip_address=LOOPBACK)
    with _loopback_node():
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    before = os.environ.get("RAY_ADDRESS")
    try:
        with _loopback_node():
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        os.environ["RAY_ADDRESS"] = cluster.address
        yield cluster.address
    finally:
        if before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = before
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def alive_nodes() -> set[str]:
    """The node ids of the cluster the driver is connected to."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
