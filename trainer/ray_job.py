"""The Ray Train job: TorchTrainer over AceTrainer workers, checkpoints, resume, exports.

Checkpoints go to <root>/checkpoints/<run_name>/ every `checkpoint_every` steps (and at the end); a crash
is retried once from the latest checkpoint, and a re-run with the same run name resumes from it. Rank 0
writes every logged step (and every checkpoint step) to metrics/step-NNNNNNN.json beside the checkpoints (one
file per step: object stores cannot append; a step retried after a crash overwrites its file), merged into
metrics.jsonl at the end; it rewrites live.json every `ui_every` steps for a watcher (trainer/live.py) and,
with a held-out split, evaluates each checkpoint into eval/ (trainer/evaluate.py); exports land in
<root>/checkpoints/exports/<run_name>/. The root is any fsspec URI: Ray Train writes checkpoints through the
same filesystem (s3:// included), exports are written locally and uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig

from schemas.config import TrainConfig
from schemas import io as storage
from trainer.components import TINY_NAME, build_tiny_pipeline, save_pipeline
from trainer.data import iter_batches, iter_examples
from trainer.evaluate import CheckpointEval
from trainer.live import LiveLog
from trainer.train import AceTrainer


@dataclass
class TrainResult:
    run_dir: str  # URIs (local paths for a local root)
    checkpoint: str
    step: int
    metrics: list[dict]
    exports: dict[str, str]


def base_folder(cfg: TrainConfig, root: str | Path) -> Path:
    """The diffusers folder to train from; 'tiny' builds (once) a toy random-weight model under <root>/models
    (under ~/.cache/aceforge/models when the root is not on a local disk)."""
    if cfg.base != "tiny":
        return Path(cfg.base)
    root = str(root)
    local_root = Path(os.environ.get("ACEFORGE_CACHE", Path.home() / ".cache" / "aceforge")) if "://" in root \
        else Path(root)
    folder = local_root / "models" / TINY_NAME
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
    batches = iter_batches(iter_examples(config["urls"], cfg, rank, world, start=trainer.examples_seen),
                           cfg.batch_size, start=trainer.examples_seen)
    metrics_dir = config["metrics_dir"]
    run_dir = storage.parent(metrics_dir)
    live = LiveLog(run_dir, cfg.max_steps) if rank == 0 else None
    evaluate = _checkpoint_eval(cfg, config["urls"], run_dir, rank, world)
    while trainer.step_no < cfg.max_steps:
        batch, position = next(batches)  # one layout (aspect bucket) per batch
        m = trainer.train_step(batch)
        trainer.examples_seen = position  # the stream position, which is what a resume starts from
        m["world_size"] = world
        step = trainer.step_no
        at_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.max_steps
        if evaluate is not None and at_checkpoint:  # rank 0 only, on the unwrapped transformer
            record = evaluate(trainer, step)
            if record is not None:
                m["eval_loss"] = record["loss"]
                live.add_eval(record)
        if rank == 0 and (step % cfg.log_every == 0 or at_checkpoint):
            storage.atomic_write_bytes(storage.join(metrics_dir, f"step-{step:07d}.json"), json.dumps(m).encode())
        if live is not None:
            live.add_metrics(m)
            if step % cfg.ui_every == 0 or at_checkpoint:
                live.write(step)
        if at_checkpoint:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    trainer.save_state(d)
                ray.train.report(m, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
        elif step % cfg.log_every == 0:
            ray.train.report(m)


def _checkpoint_eval(cfg: TrainConfig, urls: list[str], run_dir: str, rank: int, world: int) -> CheckpointEval | None:
    if rank != 0 or cfg.eval_fraction <= 0:
        return None
    if cfg.fsdp and world > 1:
        print("eval: skipped under FSDP with several workers (rank 0 holds only shards of the model)")
        return None
    return CheckpointEval(cfg, urls, run_dir)


def run_training(cfg: TrainConfig, shard_urls: list[str], root: str | Path, export: bool = True,
                 watch: Callable[[str], AbstractContextManager] | None = None) -> TrainResult:
    """Train, then export. `watch(run_dir)`: a context held while Ray trains (the live UI publisher)."""
    root = storage.absolute(str(root))
    ckpts = storage.join(root, "checkpoints")
    run_dir = storage.join(ckpts, cfg.run_name)
    fs, run_path = storage.fs_path(run_dir)
    fs.makedirs(run_path, exist_ok=True)
    base = base_folder(cfg, root)
    # Ray workers run in other directories: local shard paths must be absolute
    shard_urls = [storage.absolute(u) for u in shard_urls]
    if not shard_urls:
        raise ValueError("no shards to train on")
    if not ray.is_initialized():  # the entry point owns Ray (flows/training.py starts it)
        raise RuntimeError("Ray is not running: start it first (tasks.ray_pool.ensure_ray)")
    with watch(run_dir) if watch is not None else nullcontext():
        result = _fit(cfg, shard_urls, base, ckpts, run_dir)
    ckpt_uri = _uri(fs, result.checkpoint.path)
    metrics = _merge_metrics(run_dir)
    with result.checkpoint.as_directory() as local_ckpt:
        step = json.loads((Path(local_ckpt) / "state.json").read_text())["step"]
        exports = export_checkpoint(cfg, base, Path(local_ckpt), storage.join(ckpts, "exports", cfg.run_name)) \
            if export else {}
    return TrainResult(run_dir, ckpt_uri, step, metrics, exports)


def _uri(fs, path: str) -> str:
    if storage.is_local(fs):
        return path
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if "://" in path else f"{proto}://{path}"


def _merge_metrics(run_dir: str) -> list[dict]:
    """The per-step metric files, in step order, also written as metrics.jsonl."""
    fs, path = storage.fs_path(storage.join(run_dir, "metrics"))
    recs = []
    for p in sorted(fs.ls(path, detail=False)) if fs.exists(path) else []:
        if p.rsplit("/", 1)[-1].startswith("step-") and p.endswith(".json"):
            with fs.open(p, "rb") as f:
                recs.append(json.loads(f.read()))
    recs.sort(key=lambda r: r["step"])
    storage.atomic_write_bytes(storage.join(run_dir, "metrics.jsonl"),
                               "".join(json.dumps(r) + "\n" for r in recs).encode())
    return recs


def _fit(cfg: TrainConfig, shard_urls: list[str], base: Path, ckpts: str, run_dir: str):
    use_gpu = cfg.use_gpu == "yes" or (cfg.use_gpu == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    fs, path = storage.fs_path(ckpts)
    where = {"storage_path": path} if storage.is_local(fs) else \
        {"storage_path": path, "storage_filesystem": storage.arrow_fs(fs)}
    trainer = ray.train.torch.TorchTrainer(
        _loop,
        train_loop_config={"train": cfg.model_dump(), "base": str(base), "urls": shard_urls,
                           "metrics_dir": storage.join(run_dir, "metrics")},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RayRunConfig(name=cfg.run_name, failure_config=FailureConfig(max_failures=1),
                                checkpoint_config=CheckpointConfig(num_to_keep=3), **where),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:  # a worker's error, in one line (its traceback is in the log)
        raise RuntimeError(f"training run {cfg.run_name} failed: {worker_error(e)}") from None
    if result.error is not None:
        raise RuntimeError(f"training run {cfg.run_name} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.run_name} produced no checkpoint")
    return result


def worker_error(e: BaseException) -> str:
    """The last line of the first failing worker's error (`module.Error: message`), or of `e` itself."""
    failures = getattr(e, "worker_failures", None) or {}
    source = next(iter(failures.values()), e) if isinstance(failures, dict) else e
    lines = [ln for ln in str(source).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(source).__name__


def export_checkpoint(cfg: TrainConfig, base: Path, ckpt: Path, out_uri: str) -> dict[str, str]:
    """LoRA in diffusers and kohya/ComfyUI formats, or a full diffusers transformer folder, into `out_uri`
    (written in a local folder first and uploaded when the URI is remote)."""
    from trainer.export import export_diffusers_lora, export_full, export_kohya_lora

    trainer = AceTrainer(cfg.model_copy(update={"gradient_checkpointing": False, "use_gpu": "no"}), base)
    trainer.setup()
    trainer.load_state(ckpt)
    fs, path = storage.fs_path(out_uri)
    local = storage.is_local(fs)
    out = Path(path) if local else Path(tempfile.mkdtemp(prefix="aceforge-export-"))
    out.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "full":
        export_full(trainer.transformer, out / "transformer", adapter_name=None)
        made = {"diffusers_transformer": "transformer"}
    else:
        export_diffusers_lora(trainer.transformer, out / "diffusers")
        export_kohya_lora(trainer.transformer, out / "comfyui_lora.safetensors")
        made = {"diffusers_lora": "diffusers", "comfyui_lora": "comfyui_lora.safetensors"}
    if not local:
        fs.makedirs(path, exist_ok=True)
        fs.put(str(out) + "/", path, recursive=True)
        shutil.rmtree(out, ignore_errors=True)
    return {k: storage.join(out_uri, v) for k, v in made.items()}
