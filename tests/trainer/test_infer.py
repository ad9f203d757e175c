import numpy as np
import pytest
import torch
from PIL import Image

from tests.trainer.test_lora import randomize_lora, tiny_transformer
from trainer.export import export_diffusers_lora, export_kohya_lora
from trainer.infer import ace_canvas, run_infer
from trainer.lora import add_lora

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _mask(w, h, box):
    m = np.zeros((h, w), np.uint8)
    m[box[1]:box[3], box[0]:box[2]] = 255
    return Image.fromarray(m)


def test_canvas_puts_the_reference_left_with_mask_zero():
    edit, ref = Image.new("RGB", (90, 70), BLUE), Image.new("RGB", (40, 50), RED)
    canvas, mask, box = ace_canvas(edit, _mask(90, 70, (0, 0, 45, 70)), ref, repainting_scale=0.0)
    # ref 40x50 at height 70 -> 56 wide -> 48; edit 90 -> 80; height 70 -> 64
    assert canvas.size == mask.size == (128, 64) and box == (48, 0, 128, 64)
    assert canvas.mode == "RGB" and mask.mode == "L"
    px, m = np.asarray(canvas), np.asarray(mask)
    assert (px[:, :48] == RED).all() and (px[:, 48:] == BLUE).all()
    assert set(np.unique(m)) == {0, 255}
    assert (m[:, :48] == 0).all()
    assert (m[:, 48:88] == 255).all() and (m[:, 88:] == 0).all()  # left half of the edit part


def test_canvas_budgets_tokens_as_released():
    # 2000x1000 at 4,096 tokens: scale sqrt(4096 * 256 / 2e6) = 0.724 -> 1448 x 724 -> floored 1440 x 720
    canvas, mask, box = ace_canvas(Image.new("RGB", (2000, 1000), BLUE))
    assert canvas.size == (1440, 720) and box == (0, 0, 1440, 720)
    assert (1440 // 16) * (720 // 16) <= 4096 < (1456 // 16) * (736 // 16)
    assert (np.asarray(mask) == 255).all()
    # a small image is never scaled up; sides floored to 16
    canvas, _, box = ace_canvas(Image.new("RGB", (100, 37), BLUE))
    assert canvas.size == (96, 32) and box == (0, 0, 96, 32)
    # a long thin image keeps its long side past 1,024 when the budget allows (the old max side did not)
    canvas, _, _ = ace_canvas(Image.new("RGB", (1800, 600), BLUE))
    assert canvas.size == (1760, 576)  # scale sqrt(4096 * 256 / 1.08e6) = 0.985: 1773.6 x 591.2, floored
    canvas, _, _ = ace_canvas(Image.new("RGB", (1000, 1000), BLUE), max_tokens=64)
    assert canvas.size == (128, 128)
    _, mask, _ = ace_canvas(Image.new("RGB", (64, 64), BLUE), Image.new("L", (64, 64), 0))
    assert (np.asarray(mask) == 255).all()  # ACE++: an empty edit mask means "edit everything"
    with pytest.raises(ValueError):
        ace_canvas(Image.new("RGB", (64, 64)), Image.new("L", (32, 32)))


def test_blank_canvas_without_an_edit_image():
    canvas, mask, box = ace_canvas(None, size=(96, 64))
    assert canvas.size == (96, 64) and box == (0, 0, 96, 64)
    assert (np.asarray(mask) == 255).all()
    assert (np.abs(np.asarray(canvas, float) - 127.5) <= 0.5).all()  # condition 0 in [-1, 1]: mid-grey
    canvas, mask, box = ace_canvas(None, ref_image=Image.new("RGB", (32, 64), RED), size=(96, 64))
    assert canvas.size == (128, 64) and box == (32, 0, 128, 64)
    assert (np.asarray(canvas)[:, :32] == RED).all() and (np.asarray(mask)[:, :32] == 0).all()


def test_resolve_follows_the_training_layout():
    from trainer.infer import resolve

    edit, mask = Image.new("RGB", (64, 64), BLUE), _mask(64, 64, (0, 0, 32, 32))
    assert resolve(edit, mask, None)[1:] == (mask, [], 1.0)
    assert resolve(edit, None, None) == (edit, None, [], 0.5)  # mask-less edit: in place, released 0.5
    assert resolve(edit, None, None, task="control_depth")[3] == 0.0
    assert resolve(edit, None, None, task="inpainting") == (None, None, [edit], 1.0)  # scale 1 would blank it
    assert resolve(edit, None, None, layout="panel") == (None, None, [edit], 1.0)
    assert resolve(None, None, None, repainting_scale=0.2) == (None, None, [], 1.0)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_repainting_scale_blends_only_the_masked_region(scale):
    rng = np.random.default_rng(0)
    edit = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    canvas, mask, _ = ace_canvas(edit, _mask(96, 64, (16, 16, 64, 48)), repainting_scale=scale)
    orig, got, m = np.asarray(edit, float), np.asarray(canvas, float), np.asarray(mask) > 0
    assert np.array_equal(got[~m], orig[~m])
    # image * (1 - mask * scale) in [-1, 1]: scale 1 leaves mid-grey, scale 0 the original
    expected = 127.5 + (orig[m] - 127.5) * (1 - scale)
    assert np.abs(got[m] - expected).max() <= 0.5
    with pytest.raises(ValueError):
        ace_canvas(edit, repainting_scale=1.5)


def test_run_infer_returns_the_edit_image_and_loads_a_lora(tiny_base, tmp_path):
    from trainer.components import load_pipeline

    folder, _ = tiny_base
    rng = np.random.default_rng(1)
    edit = Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    ref = Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8))
    mask = _mask(90, 70, (20, 10, 60, 40))
    pipe = load_pipeline(folder)
    kw = dict(steps=2, max_sequence_length=64, seed=3)

    def run(**extra):
        return np.asarray(run_infer(pipe, "add a cat", edit, mask, ref, **{**kw, **extra}), dtype=float)

    out = run_infer(pipe, "add a cat", edit, mask, ref, **kw)
    assert isinstance(out, Image.Image) and out.size == edit.size and out.mode == "RGB"
    base = np.asarray(out, dtype=float)
    assert np.array_equal(run(), base)  # seeded
    assert np.abs(run(repainting_scale=0.0) - base).max() > 0  # the condition keeps the masked pixels

    trained = load_pipeline(folder)
    add_lora(trained.transformer, rank=4)
    randomize_lora(trained.transformer, std=0.2)
    export_diffusers_lora(trained.transformer, tmp_path / "lora")
    with_lora = run(lora_dir_or_file=tmp_path / "lora")
    assert np.abs(with_lora - base).max() > 1
    assert not pipe.get_list_adapters().get("transformer")  # the LoRA is gone after the call
    assert np.array_equal(run(), base)


def test_run_infer_text_to_image_and_maskless_hint(tiny_base):
    from trainer.components import load_pipeline

    pipe = load_pipeline(tiny_base[0])
    kw = dict(steps=2, max_sequence_length=64, seed=1)
    out = run_infer(pipe, "a cat", None, size=(80, 48), **kw)
    assert out.size == (80, 48) and out.mode == "RGB"
    rng = np.random.default_rng(4)
    edit = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    half = np.asarray(run_infer(pipe, "make it red", edit, **kw), float)  # in place, scale 0.5
    other = Image.fromarray(255 - np.asarray(edit))
    assert np.abs(np.asarray(run_infer(pipe, "make it red", other, **kw), float) - half).max() > 0  # sees it
    blank = np.asarray(run_infer(pipe, "make it red", edit, repainting_scale=0.0, **kw), float)
    assert np.abs(blank - half).max() > 0


def test_run_infer_with_a_kohya_file_matches_the_live_adapter(tiny_base, tmp_path):
    from diffusers import FluxFillPipeline

    from trainer.components import load_pipeline

    # diffusers' kohya converter needs FLUX.1's width for single blocks: one such block, no double blocks
    parts = load_pipeline(tiny_base[0]).components
    pipe = FluxFillPipeline(**{**parts, "transformer": tiny_transformer(0, 1, flux_width=True)})
    edit = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    kw = dict(steps=2, max_sequence_length=64, seed=5)
    base = np.asarray(run_infer(pipe, "add a cat", edit, **kw), dtype=float)
    add_lora(pipe.transformer, rank=4)
    randomize_lora(pipe.transformer, std=0.05)
    live = np.asarray(run_infer(pipe, "add a cat", edit, **kw), dtype=float)
    path = export_kohya_lora(pipe.transformer, tmp_path / "ace_plus.safetensors")
    pipe.transformer.delete_adapters("default")
    loaded = np.asarray(run_infer(pipe, "add a cat", edit, lora_dir_or_file=path, **kw), dtype=float)
    assert np.abs(live - base).max() > 1
    assert np.abs(loaded - live).max() <= 1


def test_run_infer_with_the_toy_base_kohya_export_equals_the_diffusers_export(tiny_base, tmp_path):
    """The toy base is not FLUX.1's width, which diffusers' kohya converter asserts: the kohya file loads
    through this project's own mapping (trainer.export.kohya_to_diffusers) and edits like the diffusers file."""
    from trainer.components import load_pipeline

    folder, _ = tiny_base
    pipe = load_pipeline(folder)
    edit = Image.fromarray(np.random.default_rng(6).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    kw = dict(steps=2, max_sequence_length=64, seed=2)
    run = lambda **extra: np.asarray(run_infer(pipe, "add a cat", edit, **kw, **extra), dtype=float)  # noqa: E731
    base = run()
    trained = load_pipeline(folder)
    add_lora(trained.transformer, rank=4, alpha=8.0)  # alpha / rank = 2: folded into the kohya up weights
    randomize_lora(trained.transformer, std=0.2)
    export_diffusers_lora(trained.transformer, tmp_path / "diffusers")
    kohya = export_kohya_lora(trained.transformer, tmp_path / "comfyui_lora.safetensors", dtype=torch.float32)
    from_diffusers = run(lora_dir_or_file=tmp_path / "diffusers")
    from_kohya = run(lora_dir_or_file=kohya)
    assert np.abs(from_diffusers - base).max() > 1
    assert np.abs(from_kohya - from_diffusers).max() <= 1  # uint8 images; rounding only
    assert not pipe.get_list_adapters().get("transformer")
