import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flows.training import plan_training, train_on_shards
from schemas.config import RunConfig, ShardConfig
from store.shards import write_shard_set
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
    assert ab.cfg.train.run_name.startswith("p1-") and len(ab.cfg.train.run_name) == 15
    moved = shutil.copytree(a, tmp_path / "elsewhere" / "a")  # the same shards at another place: the same run
    assert plan_training(cfg, str(moved)).cfg.train.run_name == plan_training(cfg, a).cfg.train.run_name
    assert plan_training(cfg, a).cfg.train.run_name not in (ab.cfg.train.run_name, plan_training(cfg, b).cfg.train.run_name)
    with pytest.raises(ValueError, match="holds the same shards as"):
        plan_training(cfg, [a, str(moved)])
    named = RunConfig(root=cfg.root, train={**TRAIN, "run_name": "mine"})
    assert plan_training(named, [a, b]).cfg.train.run_name == "mine"
    with pytest.raises(ValueError, match="init_from .* does not exist"):
        plan_training(RunConfig(root=cfg.root, train={**TRAIN, "phase": 2, "init_from": str(tmp_path / "x")}), a)


@pytest.fixture
def one_ray():
    """One Ray for the whole test (train_on_shards leaves a Ray it did not start running)."""
    from runtime.ray_pool import ensure_ray, stop_ray

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
        identity = json.loads(Path(res.run_dir, "identity.json").read_text())
        assert identity["train"]["phase"] == 1
        assert [s["manifest"] for s in identity["sets"]] == identity["shard_sets"]  # each set as pinned
        assert not Path(res.run_dir, "data").exists()  # the snapshots go once the run is finished
        assert res.data.read == res.data.kept + sum(res.data.skipped.values()) and res.data.kept >= 2
    ckpts = sorted(p.name for p in Path(first.run_dir).glob("checkpoint_*"))
    exported = Path(first.exports["comfyui_lora"]).stat().st_mtime_ns
    again = train_on_shards(cfg, [a])  # the same shards land again: the finished run, at once
    assert again.run_dir == first.run_dir and again.step == 2 and again.checkpoint == first.checkpoint
    assert [m["step"] for m in again.metrics] == [1, 2] and again.exports == first.exports
    assert sorted(p.name for p in Path(first.run_dir).glob("checkpoint_*")) == ckpts  # nothing trained
    assert Path(first.exports["comfyui_lora"]).stat().st_mtime_ns == exported  # nor exported again
    with pytest.raises(ValueError, match="already holds a run of other shards"):
        train_on_shards(RunConfig(root=str(root), train={**TRAIN, "run_name": Path(first.run_dir).name}), [b])


class _Stop(Exception):
    pass


def test_the_run_reads_the_version_it_was_named_after_while_a_mining_run_rewrites_the_set(tmp_path, monkeypatch):
    """train_on_shards hands the trainer a snapshot: rewritten under the run (the way a mining re-run replaces
    a set's tars), the set still yields, to the run, the samples of the manifest named in identity.json."""
    import flows.training as training
    from store.shards import manifest_digest
    from tests.flows.test_snapshot import rewrite_set, write_set
    from trainer.data import iter_examples
    from schemas.config import TrainConfig

    a = write_set(str(tmp_path / "root" / "shards" / "a"), "a")
    digest = manifest_digest(a)
    given = {}

    def capture(cfg, sets, root, **kw):  # the Ray Train run, replaced by its data reader below
        given["sets"] = sets
        raise _Stop

    monkeypatch.setattr(training, "ensure_ray", lambda: False)
    monkeypatch.setattr(training, "run_training", capture)
    cfg = RunConfig(root=str(tmp_path / "root"), train={**TRAIN, "phase": 2})
    with pytest.raises(_Stop):
        train_on_shards(cfg, a)
    stream = iter_examples(given["sets"], TrainConfig(**{**TRAIN, "phase": 2}))
    keys = [next(stream).key for _ in range(3)]
    rewrite_set(a, "b")
    assert manifest_digest(a) != digest
    keys += [next(stream).key for _ in range(3)]
    assert keys == [f"a-{i}" for i in range(6)]
    run_dir = tmp_path / "root" / "checkpoints" / plan_training(cfg, a).cfg.train.run_name
    assert not run_dir.exists()  # the new version names another run
    (recorded,) = [p for p in (tmp_path / "root" / "checkpoints").iterdir()]
    sets = json.loads((recorded / "identity.json").read_text())["sets"]
    assert sets == [{"uri": a, "manifest": digest, "snapshot": str(recorded / "data" / digest[:16]), "copied": 0}]


def _reference_only_set(folder: Path) -> str:
    rng = np.random.default_rng(0)
    uri = str(folder / "shards" / "refs")
    write_shard_set([make_sample(i, rng, task="reference_generation", key=f"r-{i}") for i in range(3)], uri,
                    ShardConfig(maxcount=2))
    return uri


def test_phase_one_on_a_shard_set_without_zero_ref_tasks_is_refused_from_the_manifests(tmp_path):
    from flows.training import check_trainable

    uri = _reference_only_set(tmp_path)
    cfg = RunConfig(root=str(tmp_path), train=TRAIN)
    with pytest.raises(ValueError) as e:
        check_trainable(cfg.train, [uri])
    msg = str(e.value)
    assert "\n" not in msg and uri in msg and "phase 1" in msg and "reference_generation (3)" in msg
    with pytest.raises(ValueError, match="phase 1"):
        plan_training(cfg, uri)  # the training flow's entry
    check_trainable(cfg.train, [uri], phases=[2])  # phase 2 takes every task
    with pytest.raises(ValueError, match="phase 1"):
        check_trainable(cfg.train, [uri], phases=[1, 2])


def test_the_cli_refuses_phase_one_without_zero_ref_tasks_before_ray_or_a_flow_starts(tmp_path, monkeypatch):
    import ray
    from typer.testing import CliRunner

    import flows.pipelines
    import runtime.ray_pool
    from flows.cli import app

    def forbidden(*a, **k):
        raise AssertionError("started")

    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(runtime.ray_pool, "ensure_ray", forbidden)
    monkeypatch.setattr(flows.pipelines, "train_flow", forbidden)
    uri = _reference_only_set(tmp_path)
    res = CliRunner().invoke(app, ["train", uri, "--phase", "1", "--steps", "2"])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "no sample is trainable in phase 1" in text and "reference_generation (3)" in text
    assert "started" not in text and "Traceback" not in res.output
