import json

import pytest

from schemas.config import TrainConfig
from trainer.runs import claim_run_dir, derived_name, latest_checkpoint, run_identity


def test_identity_follows_what_changes_the_result_only():
    cfg = TrainConfig(phase=1)
    base = run_identity(cfg, ["d1", "d2"])
    assert run_identity(cfg, ["d1", "d2"]) == base
    for other in (run_identity(cfg, ["d1", "d3"]), run_identity(cfg, ["d1"]),
                  run_identity(TrainConfig(phase=2), ["d1", "d2"]), run_identity(TrainConfig(lr=2e-3), ["d1", "d2"]),
                  run_identity(TrainConfig(seed=1), ["d1", "d2"]),
                  run_identity(TrainConfig(max_steps=5), ["d1", "d2"]),  # the schedule is cut to max_steps
                  run_identity(TrainConfig(num_workers=4), ["d1", "d2"])):  # the global batch follows it
        assert other["hash"] != base["hash"]
    same = TrainConfig(phase=1, run_name="x", checkpoint_every=7, use_gpu="no", eval_images=1, ui_every=3)
    assert run_identity(same, ["d1", "d2"])["hash"] == base["hash"]
    name = derived_name(base)
    assert name == "p1-" + base["hash"][:12] and TrainConfig(run_name=name).run_name == name


def test_a_run_folder_refuses_another_identity_and_unrecorded_checkpoints(tmp_path):
    first, second = run_identity(TrainConfig(), ["d1"]), run_identity(TrainConfig(), ["d2"])
    run = str(tmp_path / "run")
    claim_run_dir(run, first, ["a"])
    assert json.loads((tmp_path / "run" / "identity.json").read_text())["hash"] == first["hash"]
    claim_run_dir(run, first)  # the same data: accepted (a resume)
    with pytest.raises(ValueError, match="already holds a run of other shards or settings") as info:
        claim_run_dir(run, second)
    assert "\n" not in str(info.value)
    old = tmp_path / "old"
    (old / "checkpoint_2025-01-01_00-00-00.000000").mkdir(parents=True)
    (old / "checkpoint_2025-01-01_00-00-00.000000" / "state.json").write_text(json.dumps({"step": 3}))
    with pytest.raises(ValueError, match="has checkpoints but no identity.json"):
        claim_run_dir(str(old), first)
    assert not (old / "identity.json").exists()


def test_latest_checkpoint_is_the_highest_step(tmp_path):
    assert latest_checkpoint(str(tmp_path / "none")) is None
    for name, step in (("checkpoint_b", 4), ("checkpoint_a", 8), ("checkpoint_c", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text(json.dumps({"step": step}))
    (tmp_path / "checkpoint_d").mkdir()  # unfinished: no state.json
    assert latest_checkpoint(str(tmp_path)).uri.endswith("checkpoint_a")
