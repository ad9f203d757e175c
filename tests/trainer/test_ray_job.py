import json
from pathlib import Path

import numpy as np
import pytest

from schemas.config import ShardConfig, TrainConfig
from tasks.shards import shard_uris, write_shard_set
from tests.conftest import make_sample


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    yield
    ray.shutdown()


@pytest.mark.slow
def test_two_worker_run_checkpoints_resumes_and_exports(ray_local, tmp_path):
    from trainer.ray_job import run_training

    rng = np.random.default_rng(0)
    samples = [make_sample(i, rng, with_mask=i % 2 == 0) for i in range(6)]
    write_shard_set(samples, str(tmp_path / "shards"), ShardConfig(maxcount=3))
    urls = shard_uris(str(tmp_path / "shards"))
    cfg = TrainConfig(lora_rank=4, max_steps=4, checkpoint_every=2, max_tokens=24, max_sequence_length=32,
                      num_workers=2, cpus_per_worker=0.5, use_gpu="no", gradient_checkpointing=True,
                      run_name="t1")
    first = run_training(cfg, urls, tmp_path / "root")
    assert first.step == 4 and [m["step"] for m in first.metrics] == [1, 2, 3, 4]
    assert all(m["world_size"] == 2 and np.isfinite(m["loss"]) for m in first.metrics)
    assert Path(first.checkpoint, "trainable.safetensors").is_file()
    assert Path(first.exports["diffusers_lora"], "pytorch_lora_weights.safetensors").is_file()
    assert Path(first.exports["comfyui_lora"]).is_file()
    again = run_training(cfg.model_copy(update={"max_steps": 6}), urls, tmp_path / "root", export=False)
    assert again.step == 6
    steps = [json.loads(ln)["step"] for ln in Path(again.run_dir, "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed at 4: steps 1-4 were not trained again


@pytest.mark.slow
def test_a_damaged_shard_fails_the_run_in_one_line_naming_it(ray_local, tmp_path):
    from trainer.ray_job import run_training

    rng = np.random.default_rng(0)
    write_shard_set([make_sample(i, rng) for i in range(6)], str(tmp_path / "shards"), ShardConfig(maxcount=3))
    urls = shard_uris(str(tmp_path / "shards"))
    data = Path(urls[1]).read_bytes()
    Path(urls[1]).write_bytes(data[: len(data) // 2])
    cfg = TrainConfig(lora_rank=4, max_steps=8, checkpoint_every=8, max_tokens=24, max_sequence_length=32,
                      num_workers=1, cpus_per_worker=0.5, use_gpu="no", run_name="damaged")
    with pytest.raises(RuntimeError) as info:
        run_training(cfg, urls, tmp_path / "root")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("training run damaged failed: ")
    assert "shard-000001.tar is damaged after sample 'sample-0003'" in msg
