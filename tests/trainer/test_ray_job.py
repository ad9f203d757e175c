import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
                      run_name="t1", eval_fraction=0.3, eval_draws=1, eval_infer_steps=1)
    # held out at this seed and fraction: sample-0001 (no mask) and sample-0004; each worker keeps two to train
    first = run_training(cfg, urls, tmp_path / "root")
    assert first.step == 4 and [m["step"] for m in first.metrics] == [1, 2, 3, 4]
    assert all(m["world_size"] == 2 and np.isfinite(m["loss"]) for m in first.metrics)
    # rank 0 evaluated each checkpoint under DDP while rank 1 waited at the report
    assert [sorted(m.get("eval_loss", {})) for m in first.metrics] == [[], ["general_editing"]] * 2
    run = Path(first.run_dir)
    for step in (2, 4):
        rec = json.loads((run / "eval" / f"step-{step:07d}.json").read_text())
        assert rec["samples"] == {"general_editing": 2} and rec["grid_keys"] == ["sample-0001", "sample-0004"]
        w, h = Image.open(run / "eval" / f"step-{step:07d}.png").size
        assert w % 4 == 0 and h % 2 == 0 and w // 4 >= 16 and h // 2 >= 16  # 4 columns, 2 rows of one panel size
    assert json.loads((run / "live.json").read_text())["step"] == 4
    assert Path(first.checkpoint, "trainable.safetensors").is_file()
    assert Path(first.exports["diffusers_lora"], "pytorch_lora_weights.safetensors").is_file()
    assert Path(first.exports["comfyui_lora"]).is_file()
    again = run_training(cfg.model_copy(update={"max_steps": 6}), urls, tmp_path / "root", export=False)
    assert again.step == 6
    steps = [json.loads(ln)["step"] for ln in Path(again.run_dir, "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed at 4: steps 1-4 were not trained again
    live = json.loads((run / "live.json").read_text())
    assert live["step"] == 6 and [e["step"] for e in live["evals"]] == [2, 4, 6]  # earlier evals kept on resume


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
