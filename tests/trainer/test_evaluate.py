import json

import numpy as np
import pytest
from PIL import Image

from schemas.config import ShardConfig, TrainConfig
from schemas.records import AceSample, ConditionUnit, Role
from store.shards import shard_uris, write_shard_set
from tests.conftest import png, random_image
from trainer.data import held_out, iter_examples
from trainer.evaluate import CheckpointEval
from trainer.train import AceTrainer

SIDE = 64  # max_tokens 16 on a square canvas: the target panel is 64 x 64, the size of these images


def _sample(i: int, rng: np.random.Generator) -> AceSample:
    task = "inpainting" if i % 2 else "general_editing"
    mask = png(Image.fromarray(np.where(rng.random((SIDE, SIDE)) > 0.5, 255, 0).astype(np.uint8))) if i % 2 else None
    return AceSample(key=f"sample-{i:04d}", task=task, instruction=f"Edit {{image}} ({i}).",
                     units=[ConditionUnit(role=Role.EDIT, image=png(random_image(rng, SIDE, SIDE)), mask=mask)],
                     target=ConditionUnit(role=Role.TARGET, image=png(random_image(rng, SIDE, SIDE))))


@pytest.fixture
def held_out_set(tmp_path):
    rng = np.random.default_rng(0)
    samples = [_sample(i, rng) for i in range(12)]
    write_shard_set(samples, str(tmp_path / "set"), ShardConfig(maxcount=4))
    cfg = TrainConfig(eval_fraction=0.3, max_tokens=16, lora_rank=4, max_sequence_length=32, use_gpu="no",
                      gradient_checkpointing=False, eval_infer_steps=2, eval_draws=2)
    held = {s.key: s for s in samples if held_out(s.key, cfg)}
    assert sorted(held) == ["sample-0001", "sample-0004"]  # one per task at this seed and fraction
    return cfg, shard_uris(str(tmp_path / "set")), held


def _rgb(data: bytes, mode="RGB") -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def test_checkpoint_eval_writes_losses_per_task_and_an_input_mask_output_target_grid(tiny_base, held_out_set,
                                                                                      tmp_path):
    cfg, urls, held = held_out_set
    trainer = AceTrainer(cfg, tiny_base[0])
    trainer.setup()
    run_dir = str(tmp_path / "run")
    rec = CheckpointEval(cfg, urls, run_dir)(trainer, 2)
    assert rec["samples"] == {"general_editing": 1, "inpainting": 1}
    assert set(rec["loss"]) == {"general_editing", "inpainting"} and all(v > 0 for v in rec["loss"].values())
    assert json.loads((tmp_path / "run" / "eval" / "step-0000002.json").read_text()) == rec
    assert trainer.transformer.training  # back in train mode
    grid = np.asarray(Image.open(tmp_path / "run" / "eval" / "step-0000002.png"))
    assert grid.shape == (2 * SIDE, 4 * SIDE, 3)  # rows: samples; columns: input, mask, output, target
    assert rec["grid_keys"] == ["sample-0004", "sample-0001"]  # tasks in turn, in name order
    for row, key in enumerate(rec["grid_keys"]):
        s = held[key]
        cells = [grid[row * SIDE:(row + 1) * SIDE, c * SIDE:(c + 1) * SIDE] for c in range(4)]
        assert np.array_equal(cells[0], _rgb(s.units[0].image))
        mask = _rgb(s.units[0].mask, "L") > 127 if s.units[0].mask else np.ones((SIDE, SIDE), bool)
        assert np.array_equal(cells[1], np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2))
        assert cells[2].std() > 0  # the toy model's output: noise, but an image
        assert np.array_equal(cells[3], _rgb(s.target.image))


def test_held_out_samples_never_train_and_are_capped_per_task(held_out_set):
    from trainer.data import iter_held_out

    cfg, urls, held = held_out_set
    stream = iter_examples(urls, cfg)
    seen = {next(stream).key for _ in range(30)}  # three epochs of the 10 trainable samples
    assert len(seen) == 10 and not seen & set(held)
    assert [json.loads(r["json"])["key"] for r in iter_held_out(urls, cfg)] == ["sample-0001", "sample-0004"]
    wider = cfg.model_copy(update={"eval_fraction": 0.9, "eval_samples": 2})
    tasks = [json.loads(r["json"])["task"] for r in iter_held_out(urls, wider)]
    assert sorted(tasks) == ["general_editing"] * 2 + ["inpainting"] * 2
    assert not any(held_out(f"k{i}", TrainConfig()) for i in range(1000))  # off by default
    frac = sum(held_out(f"k{i}", TrainConfig(eval_fraction=0.1)) for i in range(4000)) / 4000
    assert 0.08 < frac < 0.12


def test_samples_made_from_one_source_are_held_out_together(tmp_path):
    """A removal and its reverse addition share their source: one must not train while the other is held out
    (the addition's input is the removal's target)."""
    from schemas.records import Lineage
    from trainer.data import iter_held_out

    rng = np.random.default_rng(1)
    samples = [_sample(i, rng).model_copy(update={"key": f"{task}-{i:03d}", "task": task,
                                                  "lineage": Lineage(source_ids=[f"img{i}"])})
               for i in range(10) for task in ("object_removal", "object_addition")]
    write_shard_set(samples, str(tmp_path / "set"), ShardConfig(maxcount=8))
    urls = shard_uris(str(tmp_path / "set"))
    cfg = TrainConfig(eval_fraction=0.4, eval_samples=10, max_tokens=16)
    held = {json.loads(r["json"])["key"] for r in iter_held_out(urls, cfg)}
    stream = iter_examples(urls, cfg)
    trained = {next(stream).key for _ in range(len(samples) - len(held))}  # one epoch
    assert held and trained and len(held) + len(trained) == len(samples)
    source = lambda key: key.rsplit("-", 1)[1]  # noqa: E731
    assert not {source(k) for k in held} & {source(k) for k in trained}
