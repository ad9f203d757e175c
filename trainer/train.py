"""The ACE++ training step and its state: plain PyTorch + diffusers (Ray lives in ray_job.py).

LoRA (peft, released recipe) or full fine-tuning of the FLUX.1-Fill transformer; VAE and text encoders
frozen; AdamW, cosine schedule with warmup, gradient clipping, bf16 autocast on GPU, gradient
checkpointing. Noise and sigmas come from a generator seeded by (seed, step, rank), so a resumed run
repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from schemas.config import TrainConfig
from schemas.layout import CheckpointFiles
from trainer.components import FFT_IN_CHANNELS, check_in_channels, load_pipeline
from trainer.data import Example
from trainer.flow import logit_normal_sigmas, noisy, split_loss, token_mse, velocity_target
from trainer.lcu import LcuInputs, build_inputs, collate
from trainer.lora import add_lora
from trainer.released import adapter_layout, is_lora_file, load_lora_file, read_lora_file
from trainer.runs import STATE_META, STATE_WEIGHTS, check_compatible

STATE_OPT = CheckpointFiles.OPTIMIZER


def _device(cfg: TrainConfig) -> torch.device:
    gpu = torch.cuda.is_available() if cfg.use_gpu == "auto" else cfg.use_gpu == "yes"
    return torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")


def cosine_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.max_steps) / cfg.max_steps))

    return f


class AceTrainer:
    def __init__(self, cfg: TrainConfig, base_dir: str | Path, rank: int = 0, device: torch.device | None = None):
        self.cfg, self.base_dir, self.rank = cfg, Path(base_dir), rank
        self.device = device or _device(cfg)
        self.step_no = 0
        self.examples_seen = 0

    def setup(self, wrap=None) -> None:
        """Load the base, add LoRA or unfreeze, build the optimiser. `wrap` (e.g. DDP) wraps the transformer."""
        cfg = self.cfg
        pipe = load_pipeline(self.base_dir)
        for m in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            m.requires_grad_(False).eval().to(self.device)
        tr = pipe.transformer.to(self.device)
        tr.requires_grad_(False)
        self.modify = check_in_channels(tr.config.in_channels, self.base_dir) == FFT_IN_CHANNELS
        self.lora_file = None
        if cfg.mode == "lora" and cfg.init_from and is_lora_file(cfg.init_from):
            # the adapter has the file's modules, ranks and alphas (a resume loads its own weights over it)
            if not cfg.lora_fused:
                raise ValueError(f"init_from {cfg.init_from} is a LoRA file: it needs train.lora_fused true")
            self.lora_file = read_lora_file(cfg.init_from)
            layout, _ = adapter_layout(self.lora_file, tr)
            add_lora(tr, fused=True, layout=layout)
        elif cfg.mode == "lora":
            add_lora(tr, cfg.lora_rank, cfg.lora_alpha, fused=cfg.lora_fused)
        else:
            tr.requires_grad_(True)
        if cfg.gradient_checkpointing:
            tr.enable_gradient_checkpointing()
        tr.train()
        self.pipe, self.transformer = pipe, tr
        self.model = wrap(tr) if wrap else tr
        self.trainable = {n: p for n, p in tr.named_parameters() if p.requires_grad}
        self.opt = torch.optim.AdamW(self.trainable.values(), lr=cfg.lr, eps=cfg.adam_eps,
                                     weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine_lambda(cfg))
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" and cfg.precision in ("auto", "bf16") else nullcontext())

    @torch.no_grad()
    def encode_text(self, prompts: list[str]):
        max_len = min(self.cfg.max_sequence_length, self.pipe.tokenizer_2.model_max_length)
        embeds, pooled, txt_ids = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                          max_sequence_length=max_len)
        return embeds, pooled, txt_ids

    def _vae_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 1_009 + self.rank + 500_009)

    def loss(self, examples: list[Example], step: int, model=None) -> dict[str, torch.Tensor]:
        """`model`: what runs the forward pass (default the possibly DDP-wrapped training model)."""
        cfg = self.cfg
        if all(ex.encoded is not None for ex in examples):  # precomputed: no encoder runs
            inp = collate([ex.encoded.inputs for ex in examples])
            inp = LcuInputs(inp.x0.to(self.device), inp.cond.to(self.device), inp.img_ids, inp.is_target)
            embeds = torch.cat([ex.encoded.prompt_embeds for ex in examples]).to(self.device)
            pooled = torch.cat([ex.encoded.pooled for ex in examples]).to(self.device)
            txt_ids = examples[0].encoded.txt_ids.to(self.device)
        else:
            vae_gen = self._vae_generator(step) if cfg.vae_sample else None  # posterior draws, as released
            inp = collate([build_inputs(ex.panels, cfg.form, self.pipe.vae, cfg.repainting_scale(ex.task), vae_gen,
                                        self.modify) for ex in examples])
            embeds, pooled, txt_ids = self.encode_text([ex.instruction for ex in examples])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1_009 + self.rank)
        b = inp.x0.shape[0]
        sigma = logit_normal_sigmas(b, gen, cfg.sigma_mean, cfg.sigma_std, cfg.sigma_shift).to(self.device)
        eps = torch.randn(inp.x0.shape, generator=gen).to(self.device, inp.x0.dtype)
        x_t = noisy(inp.x0, eps, sigma)
        guidance = torch.ones(b, device=self.device) if self.transformer.config.guidance_embeds else None
        net = model or self.model
        with self.autocast:
            pred = net(hidden_states=torch.cat([x_t, inp.cond], dim=-1), timestep=sigma, guidance=guidance,
                       pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=txt_ids,
                       img_ids=inp.img_ids.to(self.device), return_dict=False)[0]
        per_token = token_mse(pred, velocity_target(inp.x0, eps))  # (b, L)
        is_target = inp.is_target.to(self.device)[None].expand_as(per_token)
        l_ref, l_tar = split_loss(per_token, is_target)
        has_ref = bool((~inp.is_target).any())
        if cfg.form == "sequence" and has_ref:
            total = cfg.ref_loss_weight * l_ref + l_tar
        else:
            total = per_token.mean()  # canvas: the whole canvas, references included
        return {"loss": total, "l_ref": l_ref.detach(), "l_tar": l_tar.detach(),
                "tokens": torch.tensor(per_token.numel())}

    @torch.no_grad()
    def eval_loss(self, examples: list[Example], seeds: range = range(4)) -> float:
        """Mean loss of each example over fixed noise draws (the steps `seeds`), without updating. Runs the
        unwrapped transformer: one rank alone may call it under DDP (no collective in its forward)."""
        losses = [float(self.loss([ex], 10_000_000 + s, model=self.transformer)["loss"])
                  for ex in examples for s in seeds]
        return sum(losses) / len(losses)

    def train_step(self, examples: list[Example]) -> dict[str, float]:
        t0 = time.perf_counter()
        out = self.loss(examples, self.step_no)
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable.values(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_no += 1
        self.examples_seen += len(examples)
        dt = time.perf_counter() - t0
        metrics = {"step": self.step_no, "loss": float(out["loss"].detach()), "l_ref": float(out["l_ref"]),
                   "l_tar": float(out["l_tar"]), "grad_norm": float(grad_norm), "lr": self.sched.get_last_lr()[0],
                   "samples_per_s": len(examples) / dt, "tokens_per_s": float(out["tokens"]) / dt}
        if self.device.type == "cuda":
            metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return metrics

    def save_state(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().cpu().contiguous() for n, p in self.trainable.items()}, str(folder / STATE_WEIGHTS))
        torch.save({"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}, folder / STATE_OPT)
        (folder / STATE_META).write_text(json.dumps({"step": self.step_no, "examples_seen": self.examples_seen,
                                                     "mode": self.cfg.mode, "form": self.cfg.form,
                                                     "lora_fused": self.cfg.lora_fused,
                                                     "phase": self.cfg.phase,
                                                     "in_channels": self.transformer.config.in_channels,
                                                     **self._lora_meta()}))

    def _lora_meta(self) -> dict:
        """The adapter's rank and alpha (a LoRA file's most common ones for a run started from one) and whether
        some module has another (per_module: only a run started from that file can load it)."""
        if self.cfg.mode != "lora":
            return {"lora_rank": self.cfg.lora_rank}
        pc = self.transformer.peft_config["default"]
        return {"lora_rank": pc.r, "lora_alpha": float(pc.lora_alpha),
                "lora_per_module": bool(pc.rank_pattern or pc.alpha_pattern)}

    def load_state(self, folder: str | Path) -> None:
        """Resume: the weights, the optimiser and schedule, the step and the stream position."""
        folder = Path(folder)
        meta = self._load_weights(folder, "checkpoint")
        state = torch.load(folder / STATE_OPT, map_location=self.device, weights_only=True)
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step_no, self.examples_seen = meta["step"], meta["examples_seen"]

    def init_weights(self, folder: str | Path) -> None:
        """Start from another run's weights (phase 2 from phase 1): its trainable tensors only; the optimiser
        and schedule stay fresh and the step and stream position stay 0."""
        self._load_weights(Path(folder), "init_from")
        self.step_no, self.examples_seen = 0, 0

    def init_weights_from_file(self) -> int:
        """Start from the LoRA file `init_from` names (read in setup; trainer/released.py): the adapter's A and B
        are the file's down and up, its scale the file's alpha / rank; the optimiser and schedule stay fresh
        and the step and stream position stay 0. Returns the kohya modules loaded."""
        if self.lora_file is None:
            raise ValueError("init_from names no LoRA file")
        n = load_lora_file(self.transformer, self.lora_file)
        self.step_no, self.examples_seen = 0, 0
        return n

    def _load_weights(self, folder: Path, what: str) -> dict:
        meta = json.loads((folder / STATE_META).read_text())
        check_compatible(meta, self.cfg, f"{what} {folder}", self.transformer.config.in_channels)
        weights = load_file(str(folder / STATE_WEIGHTS))
        missing = set(self.trainable) - set(weights)
        if missing:
            raise ValueError(f"{what} {folder} lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
        for n, p in self.trainable.items():
            if tuple(weights[n].shape) != tuple(p.shape):
                raise ValueError(f"{what} {folder}: {n} has shape {tuple(weights[n].shape)}, the model here "
                                 f"{tuple(p.shape)} (another lora_rank or base model?)")
        with torch.no_grad():
            for n, p in self.trainable.items():
                p.copy_(weights[n].to(p.device, p.dtype))
        return meta

