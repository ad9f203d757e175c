import numpy as np
import pytest
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


def test_canvas_without_reference_or_mask_and_max_side():
    canvas, mask, box = ace_canvas(Image.new("RGB", (2000, 1000), BLUE))
    assert canvas.size == (1024, 512) and box == (0, 0, 1024, 512)
    assert (np.asarray(mask) == 255).all()
    canvas, _, box = ace_canvas(Image.new("RGB", (100, 37), BLUE), max_side=64)
    assert canvas.size == (64, 16) and box == (0, 0, 64, 16)
    _, mask, _ = ace_canvas(Image.new("RGB", (64, 64), BLUE), Image.new("L", (64, 64), 0))
    assert (np.asarray(mask) == 255).all()  # ACE++: an empty edit mask means "edit everything"
    with pytest.raises(ValueError):
        ace_canvas(Image.new("RGB", (64, 64)), Image.new("L", (32, 32)))


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
