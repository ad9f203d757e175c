"""Series and reference generation (ACE B.8): mined from union-find sets, packed with their inputs in the
`reference` role, read back and trained on by the trainer in both LCU forms."""

import pytest

from flows.direct import run_mining
from schemas.config import RunConfig, TrainConfig
from schemas.records import Role, instruction_indicators
from store.shard_reader import read_shard_set
from trainer.data import Example
from trainer.panels import sample_panels
from trainer.train import AceTrainer


@pytest.fixture(scope="module")
def group_sets(demo_corpus, tmp_path_factory):
    corpus, _ = demo_corpus
    cfg = RunConfig(root=str(tmp_path_factory.mktemp("groups") / "root"),
                    mining={"presets": ["series_generation", "reference_generation"]})
    res = run_mining(cfg, source=str(corpus), writer={"kind": "template"})
    return res, {n: list(read_shard_set(res[n]["shards"]["uri"])) for n in ("series_generation", "reference_generation")}


def test_series_samples_are_the_mined_groups_with_every_input_a_reference(group_sets):
    res, sets = group_sets
    series = sets["series_generation"]
    assert len(series) == res["series_generation"]["mined"]["groups"] > 0
    assert "instructions" not in res["series_generation"]  # groups need no pair writer
    for s in series:
        n = len(s.units)
        assert 3 <= n <= 8 and all(u.role is Role.REFERENCE for u in s.units)
        assert instruction_indicators(s.instruction) == [f"image{i}" for i in range(1, n + 1)]
        assert len(set(s.lineage.source_ids)) == n + 1  # n inputs + the target, all different images
        assert [g.name for g in s.lineage.generators][-2:] == ["band-union-find", "group-templates"]


def test_reference_generation_pairs_carry_their_input_as_a_reference(group_sets):
    res, sets = group_sets
    refs = sets["reference_generation"]
    assert len(refs) == res["reference_generation"]["instructions"]["with_instruction"] > 0
    assert all([u.role for u in s.units] == [Role.REFERENCE] for s in refs)


@pytest.mark.parametrize("form", ["canvas", "sequence"])
def test_the_trainer_takes_a_step_on_each_group_task(group_sets, tiny_base, form):
    _, sets = group_sets
    folder, _ = tiny_base
    cfg = TrainConfig(mode="lora", lora_rank=4, max_steps=10, gradient_checkpointing=False, max_sequence_length=32,
                      max_tokens=64, use_gpu="no", vae_sample=False, form=form)
    tr = AceTrainer(cfg, folder)
    tr.setup()
    for task in ("series_generation", "reference_generation"):
        s = max(sets[task], key=lambda s: len(s.units))  # the most inputs the set has
        panels = sample_panels(s, cfg.max_tokens, form)
        assert len(panels) == len(s.units) + 1 and panels[-1].is_target
        assert not any(p.mask.any() for p in panels[:-1]) and panels[-1].mask.all()  # nothing edited in place
        m = tr.train_step([Example(s.key, s.task, s.instruction, panels)])
        assert m["loss"] == m["loss"] and m["loss"] > 0  # a finite loss on the sample's tokens
