import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flows.training import plan_training, train_on_shards
from schemas.config import RunConfig, ShardConfig
from tasks.shards import write_shard_set
from tests.conftest import make_sample

TRAIN = {"lora_rank": 4, "max_steps": 2, "checkpoint_every": 2, "max_tokens": 24, "max_sequence_length": 32,
         "num_workers": 1, "use_gpu": "no", "gradient_checkpointing": False}


def _shard_set(folder: Path, name: str, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    write_shard_set([make_sample(i, rng, key=f"{name}-{i}") for i in range(n)], str(folder / name),
                    ShardConfig(maxcount=2))
    return str(folder / name)


def test_an_incomplete_shard_set_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a complete shard set"):
        train_on_shards(RunConfig(root=str(tmp_path / "root")), str(tmp_path / "set"))
    assert not (tmp_path / "root").exists()


def test_the_run_is_named_by_its_shards_whatever_their_order_or_place(tmp_path):
    a, b = _shard_set(tmp_path, "a", 3, 0), _shard_set(tmp_path, "b", 3, 1)
    cfg = RunConfig(root=str(tmp_path / "root"), train=TRAIN)
    ab, ba = plan_training(cfg, [a, b]), plan_training(cfg, [b, a])
    assert ab.cfg.train.run_name == ba.cfg.train.run_name and ab.shard_sets == ba.shard_sets
    assert ab.cfg.train.run_name.startswith("s1-") and len(ab.cfg.train.run_name) == 15
    moved = shutil.copytree(a, tmp_path / "elsewhere" / "a")  # the same shards at another place: the same run
    assert plan_training(cfg, str(moved)).cfg.train.run_name == plan_training(cfg, a).cfg.train.run_name
    assert plan_training(cfg, a).cfg.train.run_name not in (ab.cfg.train.run_name, plan_training(cfg, b).cfg.train.run_name)
    with pytest.raises(ValueError, match="holds the same shards as"):
        plan_training(cfg, [a, str(moved)])
    named = RunConfig(root=cfg.root, train={**TRAIN, "run_name": "mine"})
    assert plan_training(named, [a, b]).cfg.train.run_name == "mine"
    with pytest.raises(ValueError, match="init_from .* does not exist"):
        plan_training(RunConfig(root=cfg.root, train={**TRAIN, "stage": 2, "init_from": str(tmp_path / "x")}), a)


@pytest.fixture
def one_ray():
    """One Ray for the whole test (train_on_shards leaves a Ray it did not start running)."""
    from tasks.ray_pool import ensure_ray, stop_ray

    ensure_ray()
    yield
    stop_ray()


def test_new_shards_train_a_new_run_and_a_repeated_landing_trains_nothing(tmp_path, one_ray):
    """Two landings of different shards: two runs of max_steps each; the first again: 0 new steps; its name
    given explicitly on other shards: refused."""
    a, b = _shard_set(tmp_path, "a", 4, 0), _shard_set(tmp_path, "b", 4, 1)
    root = tmp_path / "root"
    cfg = RunConfig(root=str(root), train=TRAIN)
    first = train_on_shards(cfg, [a])
    second = train_on_shards(cfg, [a, b])
    assert first.run_dir != second.run_dir
    for res in (first, second):
        assert res.step == 2 and [m["step"] for m in res.metrics] == [1, 2]
        assert json.loads(Path(res.run_dir, "identity.json").read_text())["train"]["stage"] == 1
    ckpts = sorted(p.name for p in Path(first.run_dir).glob("checkpoint_*"))
    exported = Path(first.exports["comfyui_lora"]).stat().st_mtime_ns
    again = train_on_shards(cfg, [a])  # the same shards land again: the finished run, at once
    assert again.run_dir == first.run_dir and again.step == 2 and again.checkpoint == first.checkpoint
    assert [m["step"] for m in again.metrics] == [1, 2] and again.exports == first.exports
    assert sorted(p.name for p in Path(first.run_dir).glob("checkpoint_*")) == ckpts  # nothing trained
    assert Path(first.exports["comfyui_lora"]).stat().st_mtime_ns == exported  # nor exported again
    with pytest.raises(ValueError, match="already holds a run of other shards"):
        train_on_shards(RunConfig(root=str(root), train={**TRAIN, "run_name": Path(first.run_dir).name}), [b])
