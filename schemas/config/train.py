"""Training ACE++ on the shard sets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.config.base import _Config


class TrainConfig(_Config):
    renamed = {"stage": "phase"}

    base: str = Field("tiny", description="diffusers FLUX.1-Fill-dev folder (safetensors), or 'tiny': a toy "
                                          "random-weight model of the same architecture (tests, demo)")
    form: str = Field("canvas", pattern="^(canvas|sequence)$", description="LCU++ layout (see trainer/lcu.py)")
    phase: int = Field(1, ge=1, le=2, description="training phase 1: 0-ref tasks only; 2: all tasks, weighted by "
                                                  "task_weights")
    task_weights: dict[str, float] = Field(default_factory=dict, description="phase 2 sampling weight per task "
                                                                             "(missing tasks: 1.0)")
    max_tokens: int = Field(2048, ge=4, description="cap on image tokens per sample (16x16 pixels each)")
    batch_size: int = Field(1, ge=1, description="samples per step per worker")
    mode: str = Field("lora", pattern="^(lora|full)$", description="LoRA (peft) or full fine-tuning")
    lora_rank: int = Field(64, ge=1, description="released ACE++ recipe: 64")
    lora_alpha: float | None = Field(None, description="None: equal to the rank")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate; None: the released recipe's, 1e-3 "
                                                     "for LoRA, 5e-5 for full fine-tuning")
    adam_eps: float = Field(1e-6, gt=0, description="AdamW epsilon (released recipe 1e-6)")
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_steps: int = Field(1000, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$", description="auto: bf16 autocast on GPU")
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward")
    sigma_mean: float = Field(0.0, description="logit-normal mean")
    sigma_std: float = Field(1.0, gt=0, description="logit-normal std")
    sigma_shift: float = Field(1.0, gt=0, description="> 1 shifts sigmas towards noise")
    ref_loss_weight: float = Field(1.0, ge=0, description="weight of L_ref in L_ref + L_tar (sequence form)")
    max_sequence_length: int = Field(512, ge=8, description="T5 tokens of the instruction")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    log_every: int = Field(1, ge=1, description="steps between metric reports")
    seed: int = Field(0)
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    cpus_per_worker: float = Field(0.5, gt=0, description="fractional on small CPU machines")
    use_gpu: str = Field("auto", pattern="^(auto|yes|no)$")
    precompute: bool = Field(False, description="encode VAE latents and text embeddings into side shards first "
                                                "(a Ray job); training then runs no encoder")
    fsdp: bool = Field(False, description="shard the model across GPUs (full fine-tuning on several GPUs)")
    repainting_scales: dict[str, float] = Field(default_factory=dict, description="per-task hint scale s of the "
                                                "condition edit * (1 - s * mask); missing tasks: the released "
                                                "default (schemas/taxonomy.py default_repainting_scale)")
    maskless_layout: str = Field("in_place", pattern="^(in_place|panel)$", description="a mask-less edit image: "
                                 "in_place under a full mask (released ACE++), or panel: a context panel left")
    ref_scale_pad: bool = Field(True, description="references shrunk to a random height in [H/3, H] and padded "
                                                  "back to H, centred (the released trainer always does this)")
    vae_sample: bool = Field(True, description="VAE latents sampled from the posterior (released); False: its mean")
    lora_fused: bool = Field(True, description="one LoRA per fused BFL linear (q/k/v and a single block's "
                                               "proj_mlp share lora_A), as released; False: one per diffusers linear")
    run_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="None: derived from what the run "
                                 "trains on (p<phase>-<12 hex>: the shard sets' manifests, the settings that change "
                                 "the result, init_from), so the same data resumes and new data starts a new run; "
                                 "a name given here is refused when its folder holds a run of other data")
    init_from: str | None = Field(None, description="start from these weights with a fresh optimiser at step 0 "
                                  "(phase 2 from phase 1): a checkpoint folder, a run folder "
                                  "<root>/checkpoints/<run> (its latest checkpoint), or a LoRA file in kohya / "
                                  "ComfyUI keys (*.safetensors: the released ACE++ LoRAs, a comfyui_lora export), "
                                  "whose modules, ranks and alphas the run's LoRA takes (lora_rank is ignored)")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of samples held out of training by a hash "
                                 "of (seed, key); 0: no held-out split, no eval at checkpoints")
    eval_samples: int = Field(4, ge=1, description="held-out samples per task whose loss is measured at each "
                                                   "checkpoint (the first found in shard order)")
    eval_draws: int = Field(4, ge=1, description="fixed noise draws per held-out sample in its eval loss")
    eval_images: int = Field(4, ge=0, description="held-out samples inferred into the grid saved at each checkpoint")
    eval_infer_steps: int = Field(4, ge=1, description="denoising steps of the checkpoint grid's inference")
    ui_every: int = Field(10, ge=1, description="steps between updates of the live progress file the Prefect UI "
                                                "follows (also at checkpoints and at the end)")
    leakage_source: str | None = Field(None, description="an evaluation source (folder, glob, list, tars) checked "
                                       "against the shard sets before training (`aceforge shards leakage`); None: "
                                       "no check")
    leakage: str = Field("refuse", pattern="^(refuse|drop)$", description="what a leaked sample does: refuse the "
                         "run (one line naming the report), or drop: train on a filtered copy of the set without "
                         "the leaked samples (<set>-noleak-<digest>)")
    leakage_levels: list[Literal["exact", "duplicate", "near"]] = Field(
        default_factory=lambda: ["exact", "duplicate"], description="the match levels that count as leaked: exact "
        "(same pixels), duplicate (at or above the embedder's band), near (in the band: the photo edited)")

    @field_validator("task_weights", "repainting_scales")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        from schemas.taxonomy import TASKS

        unknown = sorted(set(v) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(sorted(TASKS))}")
        return v

    @field_validator("repainting_scales")
    @classmethod
    def _unit_scales(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: s for k, s in v.items() if not 0.0 <= s <= 1.0}
        if bad:
            raise ValueError(f"repainting scales must lie in [0, 1], got {bad}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _recipe_lr(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lr") is None:
            data = {**data, "lr": 5e-5 if data.get("mode") == "full" else 1e-3}
        return data

    def repainting_scale(self, task: str) -> float:
        from schemas.taxonomy import default_repainting_scale

        return self.repainting_scales.get(task, default_repainting_scale(task))
