import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.config import ShardConfig, TrainConfig
from store.shards import shard_uris, write_shard_set
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
    from schemas.shard_layout import sample_group
    from trainer.data import held_out

    held = [s.key for s in samples if held_out(sample_group(s.key, s.lineage.source_ids), cfg)]
    assert 1 <= len(held) <= 4  # some held out, the rest split between the two workers
    first = run_training(cfg, urls, tmp_path / "root")
    assert first.step == 4 and [m["step"] for m in first.metrics] == [1, 2, 3, 4]
    assert all(m["world_size"] == 2 and np.isfinite(m["loss"]) for m in first.metrics)
    # rank 0 evaluated each checkpoint under DDP while rank 1 waited at the report
    assert [sorted(m.get("eval_loss", {})) for m in first.metrics] == [[], ["general_editing"]] * 2
    run = Path(first.run_dir)
    for step in (2, 4):
        rec = json.loads((run / "eval" / f"step-{step:07d}.json").read_text())
        assert rec["samples"] == {"general_editing": min(len(held), cfg.eval_samples)}
        assert rec["grid_keys"] == held[:cfg.eval_images]
        w, h = Image.open(run / "eval" / f"step-{step:07d}.png").size
        rows = len(rec["grid_keys"])  # 4 columns, a row per sample, of one panel size
        assert w % 4 == 0 and h % rows == 0 and w // 4 >= 16 and h // rows >= 16
    assert json.loads((run / "live.json").read_text())["step"] == 4
    assert Path(first.checkpoint, "trainable.safetensors").is_file()
    assert Path(first.exports["diffusers_lora"], "pytorch_lora_weights.safetensors").is_file()
    assert Path(first.exports["comfyui_lora"]).is_file()
    # continued to 6 steps under the first run's identity (a longer max_steps is otherwise a new run): Ray
    # Train restores the step-4 checkpoint on both workers
    identity = json.loads((run / "identity.json").read_text())
    again = run_training(cfg.model_copy(update={"max_steps": 6}), urls, tmp_path / "root", export=False,
                         identity=identity)
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
