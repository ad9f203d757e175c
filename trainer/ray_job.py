"""The Ray Train job: TorchTrainer over AceTrainer workers, checkpoints, resume, exports.

Checkpoints go to <root>/checkpoints/<run_name>/ every `checkpoint_every` steps (and at the end); a crash
is retried once from the latest checkpoint, and a re-run with the same run name resumes from it. Rank 0
appends every logged step to metrics.jsonl beside the checkpoints; exports land in
<root>/checkpoints/exports/<run_name>/.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig

from schemas.config import TrainConfig
from trainer.components import TINY_NAME, build_tiny_pipeline, save_pipeline
from trainer.data import iter_examples
from trainer.train import AceTrainer


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    step: int
    metrics: list[dict]
    exports: dict[str, Path]


def base_folder(cfg: TrainConfig, root: str | Path) -> Path:
    """The diffusers folder to train from; 'tiny' builds (once) a toy random-weight model under <root>/models."""
    if cfg.base != "tiny":
        return Path(cfg.base)
    folder = Path(root) / "models" / TINY_NAME
    if not (folder / "model_index.json").is_file():
        tmp = Path(tempfile.mkdtemp(dir=folder.parent if folder.parent.exists() else None))
        save_pipeline(build_tiny_pipeline(seed=cfg.seed), tmp / "pipe")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not folder.exists():
            os.replace(tmp / "pipe", folder)
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _loop(config: dict) -> None:
    cfg = TrainConfig(**config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    trainer = AceTrainer(cfg, config["base"], rank=rank, device=ray.train.torch.get_device())
    strategy = "fsdp" if cfg.fsdp else "ddp"
    trainer.setup(wrap=(lambda m: ray.train.torch.prepare_model(m, parallel_strategy=strategy)) if world > 1 else None)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            trainer.load_state(d)
    examples = iter_examples(config["urls"], cfg, rank, world, start=trainer.examples_seen)
    metrics_path = Path(config["metrics_path"])
    while trainer.step_no < cfg.max_steps:
        batch = [next(examples) for _ in range(cfg.batch_size)]
        m = trainer.train_step(batch)
        m["world_size"] = world
        step = trainer.step_no
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.max_steps):
            with metrics_path.open("a") as f:
                f.write(json.dumps(m) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    trainer.save_state(d)
                ray.train.report(m, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
        elif step % cfg.log_every == 0:
            ray.train.report(m)


def run_training(cfg: TrainConfig, shard_urls: list[str], root: str | Path, export: bool = True) -> TrainResult:
    root = Path(root).resolve()
    storage = root / "checkpoints"
    run_dir = storage / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    base = base_folder(cfg, root)
    # Ray workers run in other directories: local shard paths must be absolute
    shard_urls = [u if "://" in u else str(Path(u).resolve()) for u in shard_urls]
    if not shard_urls:
        raise ValueError("no shards to train on")
    started_ray = not ray.is_initialized()
    if started_ray:  # RAY_ADDRESS, when set, points ray.init at a running cluster
        ray.init(runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}}, include_dashboard=False,
                 log_to_driver=False)
    try:
        result = _fit(cfg, shard_urls, base, storage, run_dir)
    finally:
        if started_ray:
            ray.shutdown()
    ckpt = Path(result.checkpoint.path)
    step = json.loads((ckpt / "state.json").read_text())["step"]
    by_step = {}  # a step retried after a crash is logged again: the last record wins
    for ln in (run_dir / "metrics.jsonl").read_text().splitlines():
        if ln.strip():
            rec = json.loads(ln)
            by_step[rec["step"]] = rec
    metrics = [by_step[k] for k in sorted(by_step)]
    exports = export_checkpoint(cfg, base, ckpt, storage / "exports" / cfg.run_name) if export else {}
    return TrainResult(run_dir, ckpt, step, metrics, exports)


def _fit(cfg: TrainConfig, shard_urls: list[str], base: Path, storage: Path, run_dir: Path):
    use_gpu = cfg.use_gpu == "yes" or (cfg.use_gpu == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = ray.train.torch.TorchTrainer(
        _loop,
        train_loop_config={"train": cfg.model_dump(), "base": str(base), "urls": shard_urls,
                           "metrics_path": str(run_dir / "metrics.jsonl")},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RayRunConfig(name=cfg.run_name, storage_path=str(storage),
                                failure_config=FailureConfig(max_failures=1),
                                checkpoint_config=CheckpointConfig(num_to_keep=3)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training run {cfg.run_name} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.run_name} produced no checkpoint")
    return result


def export_checkpoint(cfg: TrainConfig, base: Path, ckpt: Path, out: Path) -> dict[str, Path]:
    """LoRA in diffusers and kohya/ComfyUI formats, or a full diffusers transformer folder."""
    from trainer.export import export_diffusers_lora, export_full, export_kohya_lora

    trainer = AceTrainer(cfg.model_copy(update={"gradient_checkpointing": False, "use_gpu": "no"}), base)
    trainer.setup()
    trainer.load_state(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "full":
        export_full(trainer.transformer, out / "transformer", adapter_name=None)
        return {"diffusers_transformer": out / "transformer"}
    export_diffusers_lora(trainer.transformer, out / "diffusers")
    export_kohya_lora(trainer.transformer, out / "comfyui_lora.safetensors")
    return {"diffusers_lora": out / "diffusers", "comfyui_lora": out / "comfyui_lora.safetensors"}
