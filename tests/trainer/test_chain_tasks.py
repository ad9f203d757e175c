"""Style pairs and chains read back from their shard set and trained on: one step per task, both LCU forms."""

import pytest

from schemas.config import TrainConfig
from schemas.records import Role
from store.shard_reader import read_shard_set
from tests.stages.synthesis.test_chains import build_chains
from trainer.data import Example
from trainer.panels import sample_panels
from trainer.train import AceTrainer

TASKS = ("style_editing", "style_transfer_reference", "multi_turn", "long_context")


@pytest.fixture(scope="module")
def chain_sets(tmp_path_factory):
    _, reps = build_chains(tmp_path_factory.mktemp("chain-train"))
    by_task: dict[str, list] = {}
    for s in read_shard_set(reps["pack-chains"].counts["uri"]):
        by_task.setdefault(s.task, []).append(s)
    return by_task


@pytest.mark.parametrize("form", ["canvas", pytest.param("sequence", marks=pytest.mark.slow)])
def test_the_trainer_takes_a_step_on_each_chain_task(chain_sets, tiny_base, form):
    folder, _ = tiny_base
    assert set(TASKS) <= set(chain_sets)
    cfg = TrainConfig(mode="lora", lora_rank=4, max_steps=10, gradient_checkpointing=False, max_sequence_length=32,
                      max_tokens=96, use_gpu="no", vae_sample=False, form=form)
    tr = AceTrainer(cfg, folder)
    tr.setup()
    for task in TASKS:
        s = max(chain_sets[task], key=lambda s: len(s.units))  # the longest history the set has
        panels = sample_panels(s, cfg.max_tokens, form)
        refs = sum(u.role is Role.REFERENCE for u in s.units)
        assert panels[-1].is_target and len(panels) >= refs + 1
        if task == "long_context":  # the current turn is edited in place under its mask, the history is context
            assert len(panels) == refs + 1 and not panels[-1].mask.all() and panels[-1].mask.any()
        m = tr.train_step([Example(s.key, s.task, s.instruction, panels)])
        assert m["loss"] == m["loss"] and m["loss"] > 0  # a finite loss on the sample's tokens
