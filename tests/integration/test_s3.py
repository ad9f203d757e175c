"""Data under s3:// end to end: S3 served on loopback by moto's server, the mining flow from s3:// to s3://
(units on Ray workers, which reach S3 through the same environment), then training from the s3:// shards
with checkpoints, metrics and exports written to s3://."""

import logging
import socket

import pytest

from stages.corpus.demo_corpus import generate_variants


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import urllib.request

    # moto keeps its backends per process: a server started by an earlier test would show its buckets here
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")).close()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(k, v)
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("aceforge-test")
    try:
        yield fs
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
        server.stop()


@pytest.mark.slow
def test_mining_and_training_with_every_path_on_s3(s3, tmp_path, prefect_results):
    from flows.pipelines import mine_flow
    from flows.training import train_on_shards
    from schemas.config import RunConfig
    from store.shard_reader import read_shard_set

    generate_variants(tmp_path / "corpus", 120)
    s3.put(str(tmp_path / "corpus") + "/", "aceforge-test/corpus", recursive=True)
    assert len(s3.ls("aceforge-test/corpus")) == 120
    root = "s3://aceforge-test/root"
    config = {"ingest": {"partition_files": 50, "chunk_size": 25}, "mining": {"partition_size": 50, "k": 4},
              "shards": {"maxcount": 16}}
    res = mine_flow(source="s3://aceforge-test/corpus", root=root, config=config)
    assert res["ingest"]["accepted"] == 120 and res["embeddings"]["embedded"] == 120
    shards = res["general_editing"]["shards"]
    assert shards["uri"] == f"{root}/shards/mined-general_editing" and shards["samples"] > 0
    samples = list(read_shard_set(shards["uri"], verify=True))
    assert len(samples) == shards["samples"]
    assert all(s.units[0].image and s.target.image for s in samples)
    assert s3.glob("aceforge-test/root/clusters/offline-dct-hist/layout-*/vectors-00000.npy")  # the K-means units
    assert not list(tmp_path.glob("root*"))  # nothing of the run landed on the local disk

    cfg = RunConfig(root=root, train={"lora_rank": 4, "max_steps": 2, "checkpoint_every": 2, "max_tokens": 24,
                                      "max_sequence_length": 32, "num_workers": 1, "cpus_per_worker": 1,
                                      "use_gpu": "no", "run_name": "s3run"})
    out = train_on_shards(cfg, shards["uri"])
    assert out.step == 2 and [m["step"] for m in out.metrics] == [1, 2]
    assert out.checkpoint.startswith("s3://aceforge-test/root/checkpoints/s3run/")
    assert s3.exists(out.checkpoint.removeprefix("s3://") + "/trainable.safetensors")
    assert s3.exists("aceforge-test/root/checkpoints/s3run/metrics.jsonl")
    assert s3.exists("aceforge-test/root/checkpoints/exports/s3run/comfyui_lora.safetensors")
    assert s3.exists("aceforge-test/root/checkpoints/exports/s3run/diffusers/pytorch_lora_weights.safetensors")
