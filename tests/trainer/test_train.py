import numpy as np
import pytest
import torch

from schemas.config import TrainConfig
from tests.conftest import make_sample
from trainer.data import Example
from trainer.panels import sample_panels
from trainer.train import AceTrainer


def _examples(n=8, form="canvas", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = make_sample(i, rng, with_mask=(i % 2 == 0))
        out.append(Example(s.key, s.task, s.instruction, sample_panels(s, 24, form)))
    return out


def _cfg(**kw):
    # the tiny random VAE's posterior std is ~1 (FLUX's is small): sampled latents would be noise to overfit
    base = dict(mode="lora", lora_rank=8, lr=5e-3, max_steps=1000, gradient_checkpointing=False,
                max_sequence_length=32, max_tokens=24, use_gpu="no", vae_sample=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("form", ["canvas", "sequence"])
def test_loss_falls_clearly_when_overfitting_eight_samples(tiny_base, form):
    # full fine-tuning: the tiny model's x_embedder is random, and LoRA (the recipe) leaves it frozen
    folder, _ = tiny_base
    tr = AceTrainer(_cfg(form=form, mode="full", lr=3e-3), folder)
    tr.setup()
    ex = _examples(form=form)
    before = tr.eval_loss(ex)
    for step in range(150):
        m = tr.train_step([ex[step % len(ex)]])
    after = tr.eval_loss(ex)
    assert after < 0.6 * before, (before, after)
    assert m["step"] == 150 and m["tokens_per_s"] > 0 and m["lr"] > 0


def test_lora_training_lowers_the_loss_and_touches_only_adapters(tiny_base):
    folder, pipe = tiny_base
    tr = AceTrainer(_cfg(lora_rank=16, lr=1e-2), folder)
    tr.setup()
    assert tr.trainable and all(".lora_A." in n or ".lora_B." in n for n in tr.trainable)
    ex = _examples()
    before = tr.eval_loss(ex)
    for step in range(40):
        tr.train_step([ex[step % len(ex)]])
    assert tr.eval_loss(ex) < 0.85 * before
    assert torch.equal(tr.transformer.x_embedder.weight, pipe.transformer.x_embedder.weight)


def test_full_fine_tuning_updates_base_weights(tiny_base):
    folder, pipe = tiny_base
    tr = AceTrainer(_cfg(mode="full", lr=1e-3), folder)
    tr.setup()
    w0 = pipe.transformer.x_embedder.weight.detach().clone()
    tr.train_step(_examples(1))
    assert not np.allclose(tr.transformer.x_embedder.weight.detach().numpy(), w0.numpy())
    assert len(tr.trainable) == len(list(tr.transformer.parameters()))


def test_resume_continues_with_the_same_next_step_loss(tiny_base, tmp_path):
    folder, _ = tiny_base
    ex = _examples(4)
    a = AceTrainer(_cfg(), folder)
    a.setup()
    losses = []
    for step in range(3):
        losses.append(a.train_step([ex[step % 4]])["loss"])
        if step == 1:
            a.save_state(tmp_path / "ckpt")
    b = AceTrainer(_cfg(), folder)
    b.setup()
    b.load_state(tmp_path / "ckpt")
    assert b.step_no == 2 and b.examples_seen == 2
    assert b.train_step([ex[2]])["loss"] == losses[2]
    c = AceTrainer(_cfg(mode="full"), folder)
    c.setup()
    with pytest.raises(ValueError, match="lora training"):
        c.load_state(tmp_path / "ckpt")


def test_recipe_optimiser_settings(tiny_base):
    from schemas.config import load_config

    assert TrainConfig().lr == 1e-3 and TrainConfig(mode="full").lr == 5e-5  # the released recipes
    assert TrainConfig(mode="full", lr=2e-4).lr == 2e-4
    assert load_config(None, overrides={"train.mode": "full"}).train.lr == 5e-5
    folder, _ = tiny_base
    tr = AceTrainer(TrainConfig(mode="full", gradient_checkpointing=False, use_gpu="no"), folder)
    tr.setup()
    group = tr.opt.param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"], group["betas"]) == (5e-5, 1e-6, 1e-2, (0.9, 0.999))


def test_vae_sampling_is_seeded_by_step(tiny_base):
    folder, _ = tiny_base
    ex = _examples(n=1)
    sampled = AceTrainer(_cfg(vae_sample=True), folder)
    sampled.setup()
    mean = AceTrainer(_cfg(), folder)
    mean.setup()
    a, b = (float(sampled.loss(ex, 7)["loss"].detach()) for _ in range(2))
    assert a == b  # the same step draws the same latents: a resumed run repeats itself
    assert a != float(mean.loss(ex, 7)["loss"].detach())  # posterior draws, not the mean


def test_lora_checkpoints_refuse_a_different_fusion(tiny_base, tmp_path):
    folder, _ = tiny_base
    tr = AceTrainer(_cfg(), folder)
    tr.setup()
    tr.save_state(tmp_path / "ck")
    other = AceTrainer(_cfg(lora_fused=False), folder)
    other.setup()
    with pytest.raises(ValueError, match="lora_fused"):
        other.load_state(tmp_path / "ck")


def test_batch_of_two_on_mixed_aspects_trains_within_buckets(tiny_base):
    from tests.conftest import png, random_image
    from schemas.records import ConditionUnit, Role
    from trainer.data import iter_batches, layout_key

    folder, _ = tiny_base
    rng = np.random.default_rng(3)
    stream = []
    for i, (w, h) in enumerate([(64, 32), (32, 64), (64, 32), (32, 64)]):  # wide, tall, wide, tall
        s = make_sample(i, rng).model_copy(update={
            "units": [ConditionUnit(role=Role.EDIT, image=png(random_image(rng, w, h)))],
            "target": ConditionUnit(role=Role.TARGET, image=png(random_image(rng, w, h)))})
        stream.append(Example(s.key, s.task, s.instruction, sample_panels(s, 24, "canvas")))
    assert layout_key(stream[0]) != layout_key(stream[1])
    tr = AceTrainer(_cfg(batch_size=2), folder)
    tr.setup()
    with pytest.raises(ValueError, match="share their layout"):  # what the job did before: the stream in order
        tr.loss(stream[:2], 0)
    batches = list(iter_batches(iter(stream), 2))
    assert [[ex.key for ex in b] for b, _ in batches] == [["sample-0000", "sample-0002"], ["sample-0001", "sample-0003"]]
    assert [pos for _, pos in batches] == [3, 4]
    for b, _ in batches:
        m = tr.train_step(b)
        assert np.isfinite(m["loss"])
    assert tr.step_no == 2


def test_phase_two_starts_at_phase_one_weights_with_a_fresh_optimiser_at_step_0(tiny_base, tmp_path):
    folder, _ = tiny_base
    ex = _examples(4)
    one = AceTrainer(_cfg(phase=1), folder)
    one.setup()
    for step in range(3):
        one.train_step([ex[step]])
    one.save_state(tmp_path / "stage1")
    # what phase 1's final weights give on the batch and noise of step 0
    expected = float(one.loss([ex[3]], 0)["loss"].detach())
    fresh = AceTrainer(_cfg(phase=2), folder)
    fresh.setup()
    assert float(fresh.loss([ex[3]], 0)["loss"].detach()) != expected  # the base alone gives another loss
    two = AceTrainer(_cfg(phase=2), folder)
    two.setup()
    two.init_weights(tmp_path / "stage1")
    assert (two.step_no, two.examples_seen) == (0, 0) and not two.opt.state  # no moments carried over
    assert two.sched.get_last_lr()[0] == two.cfg.lr  # the schedule starts again (no warmup: the full lr)
    m = two.train_step([ex[3]])
    assert m["step"] == 1 and m["loss"] == expected


def test_init_from_that_does_not_fit_is_refused_in_one_line(tiny_base, tmp_path):
    from safetensors.torch import load_file, save_file

    from trainer.runs import resolve_init

    folder, _ = tiny_base
    tr = AceTrainer(_cfg(lora_rank=4), folder)
    tr.setup()
    ck = tmp_path / "run" / "checkpoint_2025-01-01_00-00-00.000000"
    tr.save_state(ck)
    cases = {str(tmp_path / "nowhere"): (_cfg(lora_rank=4), "does not exist"),
             str(tmp_path): (_cfg(lora_rank=4), "neither a checkpoint folder"),
             str(ck): (_cfg(lora_rank=4, mode="full"), "is lora training, the config asks for full"),
             str(tmp_path / "run"): (_cfg(lora_rank=4, lora_fused=False), "lora_fused=True"),
             str(ck) + "/": (_cfg(lora_rank=8), "lora_rank=4, the config asks for 8")}
    for uri, (cfg, says) in cases.items():
        with pytest.raises(ValueError, match=says) as info:
            resolve_init(uri, cfg)
        assert "\n" not in str(info.value)
    assert resolve_init(str(tmp_path / "run"), _cfg(lora_rank=4)).checkpoint.uri == str(ck)
    weights = load_file(str(ck / "trainable.safetensors"))
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(ck / "trainable.safetensors"))
    other = AceTrainer(_cfg(lora_rank=4), folder)
    other.setup()
    with pytest.raises(ValueError, match=f"lacks 1 trainable tensors, e.g. {dropped}"):
        other.init_weights(ck)
