"""Training step against the data loader, side by side (the loader must keep >= 5x ahead of the step).

    python bench/train_step.py [--steps 20] [--max-tokens 256] [--form canvas]
    python bench/train_step.py --full-size      # on a GPU machine: full-size FLUX transformer step

CPU (default): the toy FLUX.1-Fill model (tiny-random-flux-fill) trained with LoRA on synthetic samples from
a real shard set; the loader is trainer.data.iter_examples (decode + bucket + panels), the step is
AceTrainer.train_step (VAE + text encoders + transformer forward/backward + AdamW), and the same step on
precomputed inputs (no encoder).

--full-size (GPU): a FluxTransformer2DModel of FLUX.1-Fill-dev's configuration with random bf16 weights,
LoRA rank 64 on the recipe's layers, a 512x1024 canvas (2048 image tokens) + 512 text tokens, batch 1,
gradient checkpointing, with random precomputed inputs (the step with no encoder) and with a VAE encode of the
canvas in the step. Prints samples/s, tokens/s, peak memory and MFU (model FLOPs / the GPU's bf16 dense peak).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def cpu_bench(args) -> None:
    from schemas.config import ShardConfig, TrainConfig
    from store.shards import shard_uris, write_shard_set
    from tests.conftest import make_sample
    from trainer.components import build_tiny_pipeline, save_pipeline
    from trainer.data import iter_examples
    from trainer.train import AceTrainer

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        samples = [make_sample(i, rng, with_mask=i % 2 == 0) for i in range(64)]
        write_shard_set(samples, f"{tmp}/set", ShardConfig(maxcount=16))
        urls = shard_uris(f"{tmp}/set")
        base = save_pipeline(build_tiny_pipeline(0), f"{tmp}/base")
        cfg = TrainConfig(form=args.form, max_tokens=args.max_tokens, lora_rank=16, max_sequence_length=64,
                          use_gpu="no", gradient_checkpointing=True)
        it = iter_examples(urls, cfg)
        next(it)
        t0 = time.perf_counter()
        examples = [next(it) for _ in range(args.steps * 4)]
        load_s = (time.perf_counter() - t0) / len(examples)
        tokens = np.mean([sum(p.image.shape[-2] * p.image.shape[-1] for p in e.panels) / 256 for e in examples])
        tr = AceTrainer(cfg, base)
        tr.setup()
        tr.train_step([examples[0]])  # warm-up
        t0 = time.perf_counter()
        for k in range(args.steps):
            tr.train_step([examples[k]])
        step_s = (time.perf_counter() - t0) / args.steps
        # the same step on precomputed inputs (what the encode job gives the loader)
        from trainer.data import Example
        from trainer.encode import Encoded
        from trainer.lcu import build_inputs

        pre = []
        for e in examples[: args.steps]:
            with torch.no_grad():
                emb, pooled, ids = tr.encode_text([e.instruction])
                pre.append(Example(e.key, e.task, e.instruction, [],
                                   Encoded(build_inputs(e.panels, cfg.form, tr.pipe.vae), emb, pooled, ids)))
        t0 = time.perf_counter()
        for e in pre:
            tr.train_step([e])
        pre_s = (time.perf_counter() - t0) / len(pre)
    print(f"toy model ({TINY}), form {args.form}, {tokens:.0f} image tokens per sample, {torch.get_num_threads()} threads")
    print(f"{'data loader (decode+bucket)':<34} {1 / load_s:9.1f} samples/s {tokens / load_s:10.0f} tokens/s")
    print(f"{'train step (encoders in step)':<34} {1 / step_s:9.1f} samples/s {tokens / step_s:10.0f} tokens/s")
    print(f"{'train step (precomputed inputs)':<34} {1 / pre_s:9.1f} samples/s {tokens / pre_s:10.0f} tokens/s")
    print(f"loader / step: {step_s / load_s:.1f}x ahead (target >= 5x)")


TINY = "tiny-random-flux-fill"


def _flops_per_step(n_params: int, n_lora: int, tokens: int, txt: int, layers: int, dim: int) -> float:
    """Model FLOPs of one LoRA step with recomputation counted once (the MFU convention): linear layers
    2*N per token forward + 2*N backward (input gradients; frozen weights take none) + attention."""
    seq = tokens + txt
    linear = 4 * n_params * seq + 6 * n_lora * seq
    attention = 3 * layers * 4 * seq * seq * dim  # QK^T and AV, forward once, backward twice
    return float(linear + attention)


def gpu_bench(args) -> None:
    from diffusers import FluxTransformer2DModel

    from trainer.lora import add_lora

    assert torch.cuda.is_available(), "--full-size needs a CUDA GPU"
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    torch.manual_seed(0)
    tr = FluxTransformer2DModel(in_channels=384, out_channels=64, num_layers=19, num_single_layers=38,
                                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])
    tr = tr.to(dev, torch.bfloat16)
    n_params = sum(p.numel() for p in tr.parameters())
    n_lora = add_lora(tr, 64)
    tr.enable_gradient_checkpointing()
    tr.train()
    opt = torch.optim.AdamW([p for p in tr.parameters() if p.requires_grad], lr=1e-4)
    h, w, txt = 512 // 8, 1024 // 8, 512
    tokens = (h // 2) * (w // 2)
    from trainer.packing import image_ids

    img_ids, txt_ids = image_ids(h, w).to(dev), torch.zeros(txt, 3, device=dev)

    def step(x0, cond):
        sigma = torch.rand(1, device=dev)
        eps = torch.randn_like(x0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = tr(hidden_states=torch.cat([(1 - sigma) * x0 + sigma * eps, cond], -1), timestep=sigma,
                      guidance=torch.ones(1, device=dev), pooled_projections=pooled, encoder_hidden_states=text,
                      txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        loss = (pred.float() - (eps - x0).float()).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in tr.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    text = torch.randn(1, txt, 4096, device=dev, dtype=torch.bfloat16)
    pooled = torch.randn(1, 768, device=dev, dtype=torch.bfloat16)
    x0 = torch.randn(1, tokens, 64, device=dev, dtype=torch.bfloat16)
    cond = torch.randn(1, tokens, 320, device=dev, dtype=torch.bfloat16)
    for _ in range(2):
        step(x0, cond)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(x0, cond)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    flops = _flops_per_step(n_params, n_lora, tokens, txt, 57, 3072)
    mfu = f"{flops / dt / (peak * 1e12):.1%}" if peak else "n/a (unknown GPU peak)"
    print(f"{name}: FLUX.1-Fill-size transformer {n_params / 1e9:.2f} B params, LoRA {n_lora / 1e6:.0f} M, "
          f"512x1024 canvas ({tokens} image + {txt} text tokens), batch 1, gradient checkpointing")
    print(f"{'precomputed inputs':<22} {1 / dt:6.3f} samples/s {tokens / dt:9.0f} tokens/s  peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB  MFU {mfu}")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, use_quant_conv=False,
                        use_post_quant_conv=False, block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2).to(dev, torch.bfloat16).eval()
    from trainer.packing import fill_condition, pack

    canvas = torch.rand(1, 3, 512, 1024, device=dev, dtype=torch.bfloat16) * 2 - 1
    mask = torch.ones(1, 1, 512, 1024, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        with torch.no_grad():
            x0e = pack(vae.encode(canvas).latent_dist.mode())
            conde = fill_condition(vae, canvas, mask)
        step(x0e, conde)
    torch.cuda.synchronize()
    dt2 = (time.perf_counter() - t0) / args.steps
    mfu2 = f"{flops / dt2 / (peak * 1e12):.1%}" if peak else "n/a"
    print(f"{'VAE encode in step':<22} {1 / dt2:6.3f} samples/s {tokens / dt2:9.0f} tokens/s  peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB  MFU {mfu2} (text encoders not run: random embeddings)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--form", default="canvas", choices=["canvas", "sequence"])
    ap.add_argument("--full-size", action="store_true")
    args = ap.parse_args()
    gpu_bench(args) if args.full_size else cpu_bench(args)


if __name__ == "__main__":
    main()
