"""Starting from the released ACE++ LoRAs (kohya / ComfyUI keys) and from a 448-channel (full fine-tune) base.

The stand-ins are written in the released files' key layout: for every double block the ten BFL modules
(`img_attn_qkv`, `img_attn_proj`, `img_mlp_0`, `img_mlp_2`, `img_mod_lin` and their `txt_` twins) and for every
single block `linear1`, `linear2`, `modulation_lin`, each as `lora_unet_<block>_<i>_<module>.lora_down.weight`,
`.lora_up.weight` and `.alpha`, bf16, rank 16 (subject, local editing) or 64 (portrait), alpha = rank (the
released recipe's). Their expected effect is computed here by hand from this table of BFL rows, independently
of trainer/released.py.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from schemas.config import TrainConfig
from tests.conftest import make_sample
from trainer.data import Example
from trainer.train import AceTrainer
from tests.mining.models.test_pull import hub  # noqa: F401 (the fake Hub fixture)
from tests.trainer.test_train import _cfg  # the trainer tests' tiny LoRA config
from tests.trainer.test_train import _examples as train_examples

# BFL module -> the diffusers linears whose rows it stacks, in order (the spec of the released layout)
DOUBLE = {"img_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"], "img_attn_proj": ["attn.to_out.0"],
          "img_mlp_0": ["ff.net.0.proj"], "img_mlp_2": ["ff.net.2"], "img_mod_lin": ["norm1.linear"],
          "txt_attn_qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
          "txt_attn_proj": ["attn.to_add_out"], "txt_mlp_0": ["ff_context.net.0.proj"],
          "txt_mlp_2": ["ff_context.net.2"], "txt_mod_lin": ["norm1_context.linear"]}
SINGLE = {"linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], "linear2": ["proj_out"],
          "modulation_lin": ["norm.linear"]}


def _targets(transformer):
    for i in range(len(transformer.transformer_blocks)):
        for name, parts in DOUBLE.items():
            yield f"lora_unet_double_blocks_{i}_{name}", [f"transformer_blocks.{i}.{p}" for p in parts]
    for i in range(len(transformer.single_transformer_blocks)):
        for name, parts in SINGLE.items():
            yield f"lora_unet_single_blocks_{i}_{name}", [f"single_transformer_blocks.{i}.{p}" for p in parts]


def write_standin(transformer, path, rank=16, alpha=None, seed=0, std=0.05):
    """A released-layout LoRA for `transformer`'s shapes with random down and up (bf16, like the releases)."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(transformer.named_modules())
    out = {}
    for stem, names in _targets(transformer):
        rows = sum(modules[n].out_features for n in names)
        out[f"{stem}.lora_down.weight"] = (torch.randn(rank, modules[names[0]].in_features, generator=g) * std)
        out[f"{stem}.lora_up.weight"] = torch.randn(rows, rank, generator=g) * std
        out[f"{stem}.alpha"] = torch.tensor(float(rank if alpha is None else alpha))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in out.items()}, str(path))
    return path


@torch.no_grad()
def merge_by_hand(transformer, path):
    """W += alpha / r * up @ down, up's rows split over the fused parts (what the released native merge does
    for alpha = rank, and kohya / ComfyUI for any alpha)."""
    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    modules = dict(transformer.named_modules())
    for stem, names in _targets(transformer):
        down, up = sd[f"{stem}.lora_down.weight"], sd[f"{stem}.lora_up.weight"]
        delta = sd[f"{stem}.alpha"].item() / down.shape[0] * (up @ down)
        start = 0
        for n in names:
            w = modules[n].weight
            w += delta[start:start + w.shape[0]]
            start += w.shape[0]


def _examples(n=4, seed=0):
    return train_examples(n, "canvas", seed)


@pytest.fixture(scope="module")
def reference(tiny_base):
    """The base alone (no adapter), and its loss with a file merged in by hand (the weights restored after)."""
    ref = AceTrainer(_cfg(mode="full"), tiny_base[0])
    ref.setup()

    def loss(example, merged_from=None):
        saved = {k: v.clone() for k, v in ref.transformer.state_dict().items()}
        if merged_from is not None:
            merge_by_hand(ref.transformer, merged_from)
        try:
            return float(ref.loss([example], 0)["loss"].detach())
        finally:
            ref.transformer.load_state_dict(saved)

    return loss


@pytest.mark.parametrize("rank,alpha", [(16, 16.0), (64, 64.0), (16, 32.0)],
                         ids=["subject-local-lora16", "portrait-lora64", "rank16-alpha32"])
def test_a_run_from_a_released_lora_starts_at_its_weights_trains_and_exports_its_layout(tiny_base, reference,
                                                                                         tmp_path, rank, alpha):
    from trainer.export import export_kohya_lora

    folder, pipe = tiny_base
    standin = write_standin(pipe.transformer, tmp_path / f"comfyui_lora{rank}.safetensors", rank, alpha)
    ex = _examples()[0]
    expected = reference(ex, merged_from=standin)
    assert abs(expected - reference(ex)) > 1e-3  # the stand-in changes the loss

    run = AceTrainer(_cfg(init_from=str(standin)), folder)  # lora_rank 8 in the config: the file decides
    run.setup()
    assert run.init_weights_from_file() == 13  # 10 double-block and 3 single-block modules
    assert (run.step_no, run.examples_seen) == (0, 0) and not run.opt.state
    first = run.train_step([ex])
    assert first["step"] == 1 and first["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert np.isfinite(run.train_step([_examples()[1]])["loss"])

    out = export_kohya_lora(run.transformer, tmp_path / "export.safetensors")
    theirs, ours = load_file(str(standin)), load_file(str(out))
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert ours[k].shape == theirs[k].shape, k  # same rank everywhere
    moved = [k for k in theirs if k.endswith("lora_up.weight") and not torch.equal(ours[k], theirs[k])]
    assert moved  # it trained


@pytest.mark.slow
def test_export_of_a_released_lora_run_loads_through_diffusers_and_resumes(tiny_base, tmp_path):
    """The checkpoint -> export path (export_checkpoint rebuilds the adapter from the file and loads the
    checkpoint over it); the diffusers export loads with FluxFillPipeline.load_lora_weights and gives the
    trained adapter's output, the kohya export keeps the released key set."""
    from tests.trainer.test_lora import forward
    from trainer.components import load_pipeline
    from trainer.ray_job import export_checkpoint

    folder, pipe = tiny_base
    standin = write_standin(pipe.transformer, tmp_path / "comfyui_subject_lora16.safetensors", 16)
    cfg = _cfg(init_from=str(standin))
    run = AceTrainer(cfg, folder)
    run.setup()
    run.init_weights_from_file()
    for e in _examples():
        run.train_step([e])
    run.save_state(tmp_path / "ckpt")
    made = export_checkpoint(cfg, folder, tmp_path / "ckpt", str(tmp_path / "exports"))
    assert set(made) == {"diffusers_lora", "comfyui_lora"}
    kohya = load_file(made["comfyui_lora"])
    assert kohya.keys() == load_file(str(standin)).keys()
    assert {v.shape[0] for k, v in kohya.items() if k.endswith("lora_down.weight")} == {16}

    trained = forward(run.transformer.eval(), img_tokens=4)
    fresh = load_pipeline(folder)
    base = forward(fresh.transformer, img_tokens=4)
    fresh.load_lora_weights(made["diffusers_lora"])
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(forward(fresh.transformer, img_tokens=4), trained, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_mapping_equals_diffusers_own_kohya_conversion(tmp_path):
    """A stand-in at FLUX.1's width (one single block: diffusers' converter hard-codes FLUX.1's linear1 split;
    one double block at toy width) loaded through diffusers' converter gives the transformer our mapping
    gives, and the run's kohya export of it loads through the converter too."""
    from diffusers import FluxFillPipeline

    from tests.trainer.test_lora import forward, tiny_transformer
    from trainer.export import export_kohya_lora
    from trainer.lora import add_lora
    from trainer.released import adapter_layout, load_lora_file, read_lora_file

    for shape in (dict(num_layers=1, num_single_layers=0), dict(num_layers=0, num_single_layers=1, flux_width=True)):
        ours = tiny_transformer(**shape)
        standin = write_standin(ours, tmp_path / "released.safetensors", rank=16, std=0.02)
        lora = read_lora_file(str(standin))
        add_lora(ours, fused=True, layout=adapter_layout(lora, ours)[0])
        load_lora_file(ours, lora)
        theirs = tiny_transformer(**shape)
        base = forward(theirs)
        wrap = lambda t: FluxFillPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,  # noqa: E731
                                          text_encoder_2=None, tokenizer_2=None, transformer=t)
        wrap(theirs).load_lora_weights(str(standin), adapter_name="released")
        mapped = forward(ours)
        assert (mapped - base).abs().max() > 1e-3
        torch.testing.assert_close(forward(theirs), mapped, rtol=1e-4, atol=1e-5)
        exported = export_kohya_lora(ours, tmp_path / "export.safetensors", dtype=torch.float32)
        again = tiny_transformer(**shape)
        wrap(again).load_lora_weights(str(exported))
        torch.testing.assert_close(forward(again), mapped, rtol=1e-4, atol=1e-5)


def _one_line(fn, says):
    with pytest.raises(ValueError, match=says) as info:
        fn()
    assert "\n" not in str(info.value)


def test_a_lora_file_that_does_not_fit_is_refused_in_one_line_naming_the_key(tiny_base, tmp_path):
    from trainer.runs import resolve_init

    folder, pipe = tiny_base
    cfg = _cfg(base=str(folder))
    good = write_standin(pipe.transformer, tmp_path / "good.safetensors", 16)
    sd = load_file(str(good))
    init = resolve_init(str(good), cfg.model_copy(update={"init_from": str(good)}))
    assert init.lora_file is not None and init.identity()["lora_file_sha256"] == init.lora_file.sha256

    def variant(name, change):
        p = tmp_path / f"{name}.safetensors"
        save_file({k: v.clone() for k, v in change(dict(sd)).items()}, str(p))
        return str(p)

    stray = "lora_unet_final_layer_linear.lora_down.weight"
    cases = {
        variant("stray", lambda d: {**d, stray: d["lora_unet_single_blocks_0_linear2.lora_down.weight"]}): stray,
        variant("unknown_module", lambda d: {**d, "lora_unet_double_blocks_0_img_attn_norm.lora_down.weight":
                                             d["lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"]}):
            "lora_unet_double_blocks_0_img_attn_norm.lora_down.weight names no module the trainer adapts",
        variant("deeper", lambda d: {**d, **{k.replace("single_blocks_0", "single_blocks_7"): v for k, v in d.items()
                                             if "single_blocks_0" in k}}):
            "lora_unet_single_blocks_7_linear1.lora_down.weight maps to single_transformer_blocks.7",
        variant("wider", lambda d: {**d, "lora_unet_double_blocks_0_img_mlp_0.lora_down.weight":
                                    torch.zeros(16, 3072, dtype=torch.bfloat16)}):
            r"lora_unet_double_blocks_0_img_mlp_0.lora_down.weight is \(16, 3072\)",
        variant("rank", lambda d: {**d, "lora_unet_single_blocks_0_linear2.lora_up.weight":
                                   torch.zeros(64, 8, dtype=torch.bfloat16)}):
            r"lora_unet_single_blocks_0_linear2.lora_up.weight is \(64, 8\), expected \(64, 16\)",
        variant("no_up", lambda d: {k: v for k, v in d.items() if k != "lora_unet_double_blocks_0_txt_mlp_2.lora_up.weight"}):
            "lora_unet_double_blocks_0_txt_mlp_2 has no lora_up.weight",
    }
    for uri, says in cases.items():
        _one_line(lambda: resolve_init(uri, cfg.model_copy(update={"init_from": uri})), says)
    _one_line(lambda: resolve_init(str(good), cfg.model_copy(update={"mode": "full"})), "starts LoRA training")
    _one_line(lambda: resolve_init(str(good), cfg.model_copy(update={"lora_fused": False})), "lora_fused true")


def test_cli_refuses_a_lora_that_does_not_fit_before_anything_starts(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    folder, pipe = tiny_base
    sd = load_file(str(write_standin(pipe.transformer, tmp_path / "x.safetensors", 16)))
    for part in ("lora_down.weight", "lora_up.weight", "alpha"):  # the tiny base has one double block
        sd[f"lora_unet_double_blocks_3_img_attn_qkv.{part}"] = sd.pop(f"lora_unet_double_blocks_0_img_attn_qkv.{part}")
    bad = tmp_path / "comfyui_subject_lora16.safetensors"
    save_file(sd, str(bad))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"root: {tmp_path / 'root'}\ntrain:\n  base: {folder}\n")
    res = CliRunner().invoke(app, ["train", str(tmp_path / "no-shards"), "--config", str(cfg),
                                   "--init-from", str(bad)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "lora_unet_double_blocks_3_img_attn_qkv.lora_down.weight" in lines[0], res.output
    assert not (tmp_path / "root").exists()  # nothing started


@pytest.fixture(scope="module")
def fft_base(tmp_path_factory):
    from trainer.components import build_tiny_pipeline, save_pipeline

    pipe = build_tiny_pipeline(seed=0, in_channels=448)
    return save_pipeline(pipe, tmp_path_factory.mktemp("fft") / "tiny-fft"), pipe


def test_a_448_channel_base_trains_a_step_exports_and_refuses_a_384_lora(fft_base, tiny_base, tmp_path):
    from diffusers import FluxTransformer2DModel

    from trainer.ray_job import export_checkpoint
    from trainer.runs import resolve_init

    folder, pipe = fft_base
    assert pipe.transformer.x_embedder.weight.shape[1] == 448
    ex = _examples()
    full = AceTrainer(_cfg(mode="full", lr=1e-3), folder)
    full.setup()
    assert full.modify
    before = full.transformer.x_embedder.weight.detach().clone()
    m = full.train_step([ex[0]])
    assert np.isfinite(m["loss"]) and not torch.equal(before, full.transformer.x_embedder.weight)
    # precomputed (side-shard) inputs carry the same 384 condition channels, and train as the live path does
    from schemas.shard_layout import encode_sample
    from trainer.encode import decode_encoded, encode_sample_bytes

    sample = make_sample(0, np.random.default_rng(0), with_mask=True)
    _, enc = decode_encoded(encode_sample_bytes(pipe, encode_sample(sample), _cfg(), folder.name))
    assert enc.inputs.cond.shape[-1] == 384
    m = full.train_step([Example(sample.key, sample.task, sample.instruction, [], enc)])
    assert m["step"] == 2 and np.isfinite(m["loss"])
    full.save_state(tmp_path / "ckpt")
    cfg = _cfg(mode="full", lr=1e-3)
    made = export_checkpoint(cfg, folder, tmp_path / "ckpt", str(tmp_path / "exports"))
    reloaded = FluxTransformer2DModel.from_pretrained(made["diffusers_transformer"])
    assert reloaded.config.in_channels == 448
    assert torch.equal(reloaded.x_embedder.weight, full.transformer.x_embedder.weight.detach())

    # a 384-channel checkpoint, and a released (384-channel) LoRA, do not fit this base: refused in one line
    tiny_folder, tiny_pipe = tiny_base
    other = AceTrainer(_cfg(mode="full"), tiny_folder)
    other.setup()
    other.save_state(tmp_path / "ckpt384")
    _one_line(lambda: resolve_init(str(tmp_path / "ckpt384"), _cfg(mode="full", base=str(folder))),
              "trained on a 384-channel base, this base takes 448")
    standin = str(write_standin(tiny_pipe.transformer, tmp_path / "comfyui_local_lora16.safetensors", 16))
    _one_line(lambda: resolve_init(standin, _cfg(base=str(folder), init_from=standin)),
              "trained on a 384-channel base, this base takes 448")


def test_the_448_layout_puts_the_source_under_the_mask_between_condition_and_mask(fft_base):
    from trainer.packing import encode, fill_condition, pack

    _, pipe = fft_base
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 0:16] = 1
    plain = fill_condition(pipe.vae, image, mask, 1.0)
    fft = fill_condition(pipe.vae, image, mask, 1.0, modify=True)
    assert plain.shape[-1] == 320 and fft.shape[-1] == 384
    torch.testing.assert_close(fft[..., :64], plain[..., :64])  # the hinted (blanked) image's latent
    torch.testing.assert_close(fft[..., 128:], plain[..., 64:])  # the mask tokens, last
    torch.testing.assert_close(fft[..., 64:128], pack(encode(pipe.vae, image * mask)))


@pytest.mark.slow
def test_a_ray_run_from_a_released_lora_exports_its_key_set_and_rank(tmp_path):
    """Through Ray Train (trainer/ray_job.py): the worker builds the file's adapter, starts from it at step 0,
    checkpoints and exports; the run's identity names the file by its sha256."""
    import hashlib
    import json

    import ray

    from schemas.config import ShardConfig
    from store.shards import shard_uris, write_shard_set
    from trainer.components import build_tiny_pipeline
    from trainer.ray_job import run_training

    rng = np.random.default_rng(0)
    write_shard_set([make_sample(i, rng, with_mask=i % 2 == 0) for i in range(4)], str(tmp_path / "shards"),
                    ShardConfig(maxcount=4))
    standin = write_standin(build_tiny_pipeline(seed=0).transformer,
                            tmp_path / "comfyui_portrait_lora64.safetensors", 64)
    cfg = TrainConfig(max_steps=2, checkpoint_every=2, max_tokens=24, max_sequence_length=32, num_workers=1,
                      cpus_per_worker=0.5, use_gpu="no", gradient_checkpointing=False, init_from=str(standin))
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        res = run_training(cfg, shard_uris(str(tmp_path / "shards")), tmp_path / "root")
    finally:
        ray.shutdown()
    assert res.step == 2 and [m["step"] for m in res.metrics] == [1, 2]
    identity = json.loads(Path(res.run_dir, "identity.json").read_text())
    assert identity["init_from"]["lora_file_sha256"] == hashlib.sha256(standin.read_bytes()).hexdigest()
    state = json.loads(Path(res.checkpoint, "state.json").read_text())
    assert (state["lora_rank"], state["in_channels"]) == (64, 384)
    ours, theirs = load_file(res.exports["comfyui_lora"]), load_file(str(standin))
    assert ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in theirs)


def test_phase_two_continues_a_run_that_started_from_a_lora_file(tiny_base, tmp_path):
    """Phase 2 from such a run's checkpoint builds the recipe adapter from the config: its rank and alpha must
    be the file's, else it is refused in one line (never loaded at another scale); `--phases` (next_phase)
    takes them from the file."""
    from trainer.runs import next_phase, resolve_init

    folder, pipe = tiny_base
    standin = write_standin(pipe.transformer, tmp_path / "comfyui_subject_lora16.safetensors", 16, alpha=32.0)
    one = AceTrainer(_cfg(init_from=str(standin)), folder)
    one.setup()
    one.init_weights_from_file()
    ex = _examples()
    one.train_step([ex[0]])
    one.save_state(tmp_path / "run" / "checkpoint_2025-01-01_00-00-00.000000")
    expected = float(one.loss([ex[1]], 0)["loss"].detach())
    ck = str(tmp_path / "run")
    _one_line(lambda: resolve_init(ck, _cfg(phase=2)), "lora_rank=16, the config asks for 8")
    _one_line(lambda: resolve_init(ck, _cfg(phase=2, lora_rank=16)), "lora_alpha=32.0, the config gives 16.0")
    cfg = next_phase(one.cfg, ck).model_copy(update={"phase": 2})  # what `--phases 1,2` runs next
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.init_from) == (16, 32.0, ck)
    assert next_phase(_cfg(), ck) == _cfg(init_from=ck)  # a run that began elsewhere: only init_from changes
    init = resolve_init(ck, cfg)
    two = AceTrainer(cfg, folder)
    two.setup()
    two.init_weights(init.checkpoint.uri)
    assert two.step_no == 0 and two.train_step([ex[1]])["loss"] == pytest.approx(expected, rel=1e-6)


def test_the_released_files_are_listed_without_unread_digests():
    from schemas.ace_plus import RELEASED_ACE_PLUS

    by_name = {f.name: f for f in RELEASED_ACE_PLUS}
    assert len(by_name) == 4 and {f.kind for f in RELEASED_ACE_PLUS} == {"lora", "full"}
    for f in RELEASED_ACE_PLUS:
        assert f.sha256 is None  # none was read from a published source
        if f.kind == "lora":  # the rank is in the released file name, the layout is FLUX.1-Fill's
            assert f.path.endswith(f"lora{f.rank}.safetensors") and f.in_channels == 384
    assert by_name["ace-plus-fft"].in_channels == 448


def test_inference_on_a_448_channel_base_feeds_the_source_under_the_mask(fft_base, monkeypatch):
    from PIL import Image

    from trainer.infer import run_infer
    from trainer.packing import encode, pack

    _, pipe = fft_base
    seen = []
    hook = pipe.transformer.x_embedder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    rng = np.random.default_rng(0)
    edit = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, :16] = 255
    source = torch.from_numpy(np.asarray(edit, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    m = torch.from_numpy(mask > 128).float()[None, None]
    expected = pack(encode(pipe.vae, source * m))  # the modify channels: the source's pixels under the mask
    # the pipeline samples the VAE posterior: hand it the posterior mean, as `encode` above takes
    vae_encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda x, *a, **k: type("Out", (), {
        "latents": vae_encode(x).latent_dist.mode()})())
    try:
        out = run_infer(pipe, "add a cat", edit, Image.fromarray(mask), steps=1, max_sequence_length=32,
                        repainting_scale=1.0)
    finally:
        hook.remove()
    assert out.size == (32, 32) and seen and seen[0].shape[-1] == 448
    torch.testing.assert_close(seen[0][0, :, 128:192], expected[0], rtol=1e-4, atol=1e-4)


def to_bfl(state: dict) -> dict:
    """diffusers FLUX transformer keys -> BFL keys (what the released ace_plus_fft file holds): this test's own
    inverse, written from BFL's module tree."""
    out, sd = {}, dict(state)

    def put(bfl, diff, fn=lambda t: t):
        for p in ("weight", "bias"):
            if f"{diff}.{p}" in sd:
                out[f"{bfl}.{p}"] = fn(sd.pop(f"{diff}.{p}"))

    def cat(bfl, diffs):
        for p in ("weight", "bias"):
            out[f"{bfl}.{p}"] = torch.cat([sd.pop(f"{d}.{p}") for d in diffs])

    def norm(bfl, diff):
        out[f"{bfl}.scale"] = sd.pop(f"{diff}.weight")

    for bfl, diff in (("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
                      ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
                      ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
                      ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
                      ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                      ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
                      ("txt_in", "context_embedder"), ("img_in", "x_embedder"), ("final_layer.linear", "proj_out")):
        put(bfl, diff)
    put("final_layer.adaLN_modulation.1", "norm_out.linear", lambda t: torch.cat(t.chunk(2)[::-1]))
    doubles = {k.split(".")[1] for k in state if k.startswith("transformer_blocks.")}
    singles = {k.split(".")[1] for k in state if k.startswith("single_transformer_blocks.")}
    for i in doubles:
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        put(f"{b}.img_mod.lin", f"{d}.norm1.linear")
        put(f"{b}.txt_mod.lin", f"{d}.norm1_context.linear")
        cat(f"{b}.img_attn.qkv", [f"{d}.attn.to_{x}" for x in "qkv"])
        cat(f"{b}.txt_attn.qkv", [f"{d}.attn.add_{x}_proj" for x in "qkv"])
        norm(f"{b}.img_attn.norm.query_norm", f"{d}.attn.norm_q")
        norm(f"{b}.img_attn.norm.key_norm", f"{d}.attn.norm_k")
        norm(f"{b}.txt_attn.norm.query_norm", f"{d}.attn.norm_added_q")
        norm(f"{b}.txt_attn.norm.key_norm", f"{d}.attn.norm_added_k")
        put(f"{b}.img_attn.proj", f"{d}.attn.to_out.0")
        put(f"{b}.txt_attn.proj", f"{d}.attn.to_add_out")
        put(f"{b}.img_mlp.0", f"{d}.ff.net.0.proj")
        put(f"{b}.img_mlp.2", f"{d}.ff.net.2")
        put(f"{b}.txt_mlp.0", f"{d}.ff_context.net.0.proj")
        put(f"{b}.txt_mlp.2", f"{d}.ff_context.net.2")
    for i in singles:
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        put(f"{b}.modulation.lin", f"{d}.norm.linear")
        cat(f"{b}.linear1", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"])
        norm(f"{b}.norm.query_norm", f"{d}.attn.norm_q")
        norm(f"{b}.norm.key_norm", f"{d}.attn.norm_k")
        put(f"{b}.linear2", f"{d}.proj_out")
    assert not sd, sorted(sd)[:3]  # every diffusers tensor placed
    return out


@pytest.mark.slow
def test_the_released_full_fine_tune_file_becomes_a_448_channel_base(fft_base, tiny_base, tmp_path):
    """A BFL-keyed stand-in of ace_plus_fft (tiny, 448 inputs) converted into a base folder beside FLUX.1-Fill's
    other parts loads with the stand-in's exact weights and trains; a 384-channel file is refused in one line."""
    from trainer.components import load_pipeline
    from trainer.released import fft_base as build_fft_base, main

    folder_448, pipe_448 = fft_base
    fill_folder, fill_pipe = tiny_base
    stand_in = tmp_path / "ace_plus_fft.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in to_bfl(pipe_448.transformer.state_dict()).items()},
              str(stand_in))
    out = build_fft_base(fill_folder, stand_in, tmp_path / "fft-base")
    loaded = load_pipeline(out)
    assert loaded.transformer.config.in_channels == 448
    want, got = pipe_448.transformer.state_dict(), loaded.transformer.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    tr = AceTrainer(_cfg(mode="full"), out)
    tr.setup()
    assert tr.modify and np.isfinite(tr.train_step([_examples(1)[0]])["loss"])

    plain = tmp_path / "fill.safetensors"
    save_file({k: v.contiguous() for k, v in to_bfl(fill_pipe.transformer.state_dict()).items()}, str(plain))
    _one_line(lambda: build_fft_base(fill_folder, plain, tmp_path / "no"), "img_in takes 384 input channels")
    assert main(["fft-base", str(fill_folder), str(plain), str(tmp_path / "no")]) == 1
    assert not (tmp_path / "no").exists()


def test_the_bfl_conversion_places_every_tensor_where_diffusers_own_converter_does():
    """At FLUX.1's width (diffusers' converter fixes it), on the meta device: same keys, same shapes."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from trainer.components import empty_transformer, tiny_transformer_config
    from trainer.released import bfl_config, bfl_to_diffusers

    config = {**tiny_transformer_config(448), "num_attention_heads": 24, "attention_head_dim": 128,
              "joint_attention_dim": 4096, "pooled_projection_dim": 768, "axes_dims_rope": [16, 56, 56],
              "num_layers": 1, "num_single_layers": 1}
    bfl = to_bfl(empty_transformer(config).state_dict())
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    ours = bfl_to_diffusers(dict(bfl), bfl_config(bfl, config))
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_ranks_and_alphas_that_differ_per_module_map_exactly(tmp_path):
    """peft's rank_pattern / alpha_pattern carry the modules whose rank or alpha is not the file's most common;
    a double block's pattern never catches the single block of the same index."""
    import copy

    from tests.trainer.test_lora import forward, tiny_transformer
    from trainer.lora import add_lora, lora_layers
    from trainer.released import adapter_layout, load_lora_file, read_lora_file

    t = tiny_transformer(num_layers=1, num_single_layers=1)
    merged = copy.deepcopy(t)
    p = str(write_standin(t, tmp_path / "mixed.safetensors", 16, std=0.1))
    sd = load_file(p)
    g = torch.Generator().manual_seed(5)
    for stem, rank, alpha in (("lora_unet_double_blocks_0_img_attn_qkv", 4, 2.0),
                              ("lora_unet_single_blocks_0_linear1", 8, 16.0)):
        sd[f"{stem}.lora_down.weight"] = (torch.randn(rank, sd[f"{stem}.lora_down.weight"].shape[1], generator=g)
                                          * 0.1).to(torch.bfloat16)
        sd[f"{stem}.lora_up.weight"] = (torch.randn(sd[f"{stem}.lora_up.weight"].shape[0], rank, generator=g)
                                        * 0.1).to(torch.bfloat16)
        sd[f"{stem}.alpha"] = torch.tensor(alpha, dtype=torch.bfloat16)
    save_file(sd, p)
    lora = read_lora_file(p)
    assert lora.ranks() == [4, 8, 16]
    add_lora(t, fused=True, layout=adapter_layout(lora, t)[0])
    load_lora_file(t, lora)
    merge_by_hand(merged, p)
    layers = dict(lora_layers(t))
    assert layers["transformer_blocks.0.attn.to_k"].lora_A["default"].weight.shape[0] == 4
    assert layers["single_transformer_blocks.0.attn.to_k"].lora_A["default"].weight.shape[0] == 8
    assert layers["single_transformer_blocks.0.attn.to_k"].scaling["default"] == 2.0
    assert layers["single_transformer_blocks.0.proj_out"].lora_A["default"].weight.shape[0] == 16
    out = forward(t)
    assert (out - forward(tiny_transformer(num_layers=1, num_single_layers=1))).abs().max() > 1e-3
    torch.testing.assert_close(out, forward(merged), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [16, 64])
def test_a_full_size_released_layout_maps_onto_flux_fill_with_the_released_parameter_count(rank):
    """FLUX.1-Fill-dev's transformer on the meta device and a LoRA file's layout at full size (304 kohya modules
    of meta tensors): the adapter covers exactly the file's modules, one shared down per kohya module, with the
    released parameter count (rank 64: 306,315,264, as the recipe's fused LoRA)."""
    from trainer.components import empty_transformer
    from trainer.lora import add_lora, lora_layers
    from trainer.released import LoraFile, adapter_layout

    fill = dict(in_channels=384, out_channels=64, guidance_embeds=True)
    t = empty_transformer(fill)
    modules = dict(t.named_modules())
    stems = {}
    for stem, names in _targets(t):
        rows = sum(modules[n].out_features for n in names)
        stems[stem] = {"lora_down.weight": torch.empty(rank, modules[names[0]].in_features, device="meta"),
                       "lora_up.weight": torch.empty(rows, rank, device="meta"),
                       "alpha": torch.tensor(float(rank))}
    assert len(stems) == 19 * 10 + 38 * 3
    lora = LoraFile("released.safetensors", "0" * 64, stems, 384)
    layout, names_of = adapter_layout(lora, t)
    assert (layout.rank, layout.alpha, layout.rank_pattern(), layout.alpha_pattern()) == (rank, rank, {}, {})
    n = add_lora(t, fused=True, layout=layout)
    in_file = sum(p.numel() for parts in stems.values() for k, p in parts.items() if k != "alpha")
    assert n == in_file == 306_315_264 * rank // 64
    adapted = dict(lora_layers(t))
    assert set(adapted) == {n for names in names_of.values() for n in names}
    for names in names_of.values():  # one down per kohya module: the parts share one lora_A parameter
        assert all(adapted[n].lora_A["default"].weight is adapted[names[0]].lora_A["default"].weight for n in names)


def test_the_phases_flow_gives_phase_two_the_files_rank_and_alpha(tiny_base, tmp_path, monkeypatch):
    """train_flow's loop (its function body, with the training call and planning stubbed): phase 2 starts from
    phase 1's run folder with the LoRA file's rank and alpha."""
    import flows.pipelines
    import flows.training
    from types import SimpleNamespace

    folder, pipe = tiny_base
    standin = write_standin(pipe.transformer, tmp_path / "comfyui_portrait_lora64.safetensors", 64, alpha=32.0)
    ran = []

    def plan(cfg, shard_sets):
        return SimpleNamespace(cfg=cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"run_name": f"p{cfg.train.phase}"})}), shard_sets=shard_sets)

    def call(job, shard_sets, root, train, name):
        ran.append(TrainConfig(**train))
        return {"run_dir": str(tmp_path / "checkpoints" / name), "metrics": [], "step": 1, "exports": {}}

    monkeypatch.setattr(flows.training, "plan_training", plan)
    monkeypatch.setattr(flows.pipelines, "call", call)
    monkeypatch.setattr(flows.pipelines, "training_summary", lambda *a, **k: None)
    config = {"train": {"base": str(folder), "init_from": str(standin), "lora_rank": 8}}
    flows.pipelines.train_flow.fn([str(tmp_path / "set")], str(tmp_path), config, [1, 2])
    assert [(t.phase, t.init_from) for t in ran] == [(1, str(standin)), (2, str(tmp_path / "checkpoints" / "p1"))]
    assert (ran[1].lora_rank, ran[1].lora_alpha) == (64, 32.0)


def test_models_pull_places_a_released_lora_where_init_from_reads_it(tiny_base, hub, tmp_path):
    """`aceforge models pull ace-plus-subject-lora` from a (fake, loopback) Hub lands the file under
    <models_dir>/ace_plus/<its repository path>, verified against the Hub's LFS sha256; the trainer reads it there
    as a released LoRA of the file's rank."""
    import hashlib
    import json

    from typer.testing import CliRunner

    from flows.cli import app
    from schemas.ace_plus import ACE_PLUS_DIR
    from schemas.ace_plus import RELEASED_ACE_PLUS
    from trainer.released import check_lora_file, read_lora_file

    subject = next(f for f in RELEASED_ACE_PLUS if f.name == "ace-plus-subject-lora")
    folder, pipe = tiny_base
    standin = write_standin(pipe.transformer, tmp_path / "standin.safetensors", rank=16)
    data = standin.read_bytes()
    hub.add_hub(subject.hf_repo, subject.path, data)
    models = tmp_path / "models"
    res = CliRunner().invoke(app, ["models", "pull", subject.name],
                             env={"ACEFORGE_MODELS": str(models), "HF_ENDPOINT": hub.url})
    assert res.exit_code == 0, res.output
    placed = models / ACE_PLUS_DIR / subject.path
    assert placed.read_bytes() == data and "--init-from" in res.output
    assert hashlib.sha256(data).hexdigest() in json.dumps(json.loads((models / "pulled.json").read_text()))
    lora = read_lora_file(str(placed))
    assert set(lora.ranks()) == {16} and len(lora.stems) == 13  # 10 per double block, 3 per single block
    assert check_lora_file(lora, dict(pipe.transformer.config)) is not None  # raises where it does not fit
