"""The Ray Train job: TorchTrainer over AceTrainer workers, checkpoints, resume, exports.

Checkpoints go to <root>/checkpoints/<run_name>/ every `checkpoint_every` steps (and at the end); a crash
is retried once from the latest checkpoint, and a re-run with the same run name resumes from it (the run
folder's identity.json must match: trainer/runs.py); a run already at `max_steps` returns at once. A run
with `init_from` starts from that checkpoint's weights (or a LoRA file's: trainer/released.py), with a fresh
optimiser at step 0. Rank 0 writes
every logged step (and every checkpoint step) to metrics/step-NNNNNNN.json beside the checkpoints (one file
per step: object stores cannot append; a step retried after a crash overwrites its file), merged into
metrics.jsonl at the end; it rewrites live.json every `ui_every` steps for a watcher (trainer/live.py) and,
with a held-out split, evaluates each checkpoint into eval/ (trainer/evaluate.py); exports land in
<root>/checkpoints/exports/<run_name>/. Every worker writes its data counts (trainer/counts.py) into
<run>/data-counts/ at each checkpoint; the result carries their sum. The root is any fsspec URI: Ray Train
writes checkpoints through the same filesystem (s3:// included), exports are written locally and uploaded.
"""

from __future__ import annotations

import hashlib
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
from schemas.layout import CheckpointFiles, ExportFiles, RunFiles, RunLayout
from trainer.components import TINY_NAME, build_tiny_pipeline, save_pipeline
from trainer.data import DataCounts, ShardSet, as_sets, iter_batches, iter_examples, merge_counts
from trainer.evaluate import CheckpointEval
from trainer.live import LiveLog
from trainer.runs import (Checkpoint as SavedCheckpoint, claim_run_dir, derived_name, latest_checkpoint, local_folder, resolve_init,
                          run_identity)
from trainer.train import AceTrainer

EXPORT_MARKER = ExportFiles.MARKER


@dataclass
class TrainResult:
    run_dir: str  # URIs (local paths for a local root)
    checkpoint: str
    step: int
    metrics: list[dict]
    exports: dict[str, str]
    data: DataCounts | None = None  # what the workers read since the run last (re)started, summed


def base_folder(cfg: TrainConfig, root: str | Path) -> Path:
    """The diffusers folder to train from; 'tiny' builds (once) a toy random-weight model under <root>/models
    (under ~/.cache/aceforge/models when the root is not on a local disk)."""
    if cfg.base != "tiny":
        return Path(cfg.base)
    root = str(root)
    local_root = Path(os.environ.get("ACEFORGE_CACHE", Path.home() / ".cache" / "aceforge")) if "://" in root \
        else Path(root)
    folder = Path(RunLayout(str(local_root)).models(TINY_NAME))
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
    elif config.get("init"):  # a new run from another run's weights or a LoRA file: fresh optimiser, step 0
        if trainer.lora_file is not None:  # read in setup, which built the adapter from its layout
            trainer.init_weights_from_file()
        else:
            with local_folder(config["init"]) as d:
                trainer.init_weights(d)
    counts = DataCounts()
    batches = iter_batches(iter_examples(config["urls"], cfg, rank, world, start=trainer.examples_seen,
                                         counts=counts), cfg.batch_size, start=trainer.examples_seen)
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
            try:
                record = evaluate(trainer, step)
            except Exception as e:  # a failed evaluation must not cost the checkpoint or the run
                print(f"eval at step {step} failed, training goes on: {type(e).__name__}: {e}")
                record = None
            if record is not None:
                m["eval_loss"] = record["loss"]
                live.add_eval(record)
        if rank == 0 and (step % cfg.log_every == 0 or at_checkpoint):
            storage.atomic_write_bytes(storage.join(metrics_dir, RunFiles.metric_name(step)), json.dumps(m).encode())
        if live is not None:
            live.add_metrics(m)
            if step % cfg.ui_every == 0 or at_checkpoint:
                live.write(step)
        if at_checkpoint:
            counts.write(run_dir, rank)
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    trainer.save_state(d)
                ray.train.report(m, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
        elif step % cfg.log_every == 0:
            ray.train.report(m)


def _checkpoint_eval(cfg: TrainConfig, urls: list, run_dir: str, rank: int, world: int) -> CheckpointEval | None:
    if rank != 0 or cfg.eval_fraction <= 0:
        return None
    if cfg.fsdp and world > 1:
        print("eval: skipped under FSDP with several workers (rank 0 holds only shards of the model)")
        return None
    return CheckpointEval(cfg, urls, run_dir)


def run_training(cfg: TrainConfig, shard_urls, root: str | Path, export: bool = True,
                 identity: dict | None = None,
                 watch: Callable[[str], AbstractContextManager] | None = None) -> TrainResult:
    """Train on `shard_urls` (one shard set's URLs, or several ShardSets: one mixture), then export.
    `identity` (from trainer.runs.run_identity over the sets' manifest digests) names the run when
    train.run_name is unset; without one, the run's identity is derived from the shard URLs themselves.
    `watch(run_dir)`: a context held while Ray trains (the live UI publisher)."""
    root = storage.absolute(str(root))
    # Ray workers run in other directories: local shard paths must be absolute
    sets = [ShardSet(tuple(storage.absolute(u) for u in s.urls), s.samples, s.versions) for s in as_sets(shard_urls)]
    if not any(s.urls for s in sets):
        raise ValueError("no shards to train on")
    init = resolve_init(cfg.init_from, cfg) if cfg.init_from else None
    if identity is None:
        identity = run_identity(cfg, [hashlib.sha256("\n".join(s.urls).encode()).hexdigest() for s in sets], init)
    cfg = cfg.model_copy(update={"run_name": cfg.run_name or derived_name(identity)})
    ckpts = RunLayout(root).checkpoints_dir
    run_dir = storage.join(ckpts, cfg.run_name)
    fs, run_path = storage.fs_path(run_dir)
    fs.makedirs(run_path, exist_ok=True)
    claim_run_dir(run_dir, identity, [u for s in sets for u in s.urls])
    base = base_folder(cfg, root)
    latest = latest_checkpoint(run_dir)
    if latest is not None and latest.step >= cfg.max_steps:  # finished: nothing to train, no Ray Train run
        ckpt = latest
    else:
        if not ray.is_initialized():  # the entry point owns Ray (flows/training.py starts it)
            raise RuntimeError("Ray is not running: start it first (runtime.ray_pool.ensure_ray)")
        with watch(run_dir) if watch is not None else nullcontext():
            result = _fit(cfg, sets, base, ckpts, run_dir, init.uri if init else None)
        fs.invalidate_cache()  # Ray's workers wrote the checkpoints: an object store's cached listings are stale
        uri = _uri(fs, result.checkpoint.path)
        with result.checkpoint.as_directory() as local_ckpt:
            ckpt = SavedCheckpoint(uri, json.loads((Path(local_ckpt) / CheckpointFiles.STATE).read_text()))
    metrics = _merge_metrics(run_dir)
    exports = _exports(cfg, base, ckpt, RunLayout(root).exports(cfg.run_name)) if export else {}
    return TrainResult(run_dir, ckpt.uri, ckpt.step, metrics, exports, merge_counts(run_dir))


def _exports(cfg: TrainConfig, base: Path, ckpt: SavedCheckpoint, out_uri: str) -> dict[str, str]:
    """The checkpoint's exports; those already made from this very checkpoint (their marker says so) are
    kept."""
    marker = storage.join(out_uri, EXPORT_MARKER)
    fs, path = storage.fs_path(marker)
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            done = json.loads(f.read())
        if done.get("checkpoint") == ckpt.uri:
            return done["exports"]
        fs.rm(path)  # exports of another checkpoint are about to be overwritten: no marker may vouch for them
    with local_folder(ckpt.uri) as local_ckpt:
        made = export_checkpoint(cfg, base, local_ckpt, out_uri)
    storage.atomic_write_bytes(marker, json.dumps({"checkpoint": ckpt.uri, "step": ckpt.step,
                                                   "exports": made}).encode())
    return made


def _uri(fs, path: str) -> str:
    if storage.is_local(fs):
        return path
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if "://" in path else f"{proto}://{path}"


def _merge_metrics(run_dir: str) -> list[dict]:
    """The per-step metric files, in step order, also written as metrics.jsonl."""
    fs, path = storage.fs_path(RunFiles(run_dir).metrics)
    recs = []
    for p in sorted(fs.ls(path, detail=False)) if fs.exists(path) else []:
        if p.rsplit("/", 1)[-1].startswith("step-") and p.endswith(RunFiles.JSON):
            with fs.open(p, "rb") as f:
                recs.append(json.loads(f.read()))
    recs.sort(key=lambda r: r["step"])
    storage.atomic_write_bytes(RunFiles(run_dir).metrics_log,
                               "".join(json.dumps(r) + "\n" for r in recs).encode())
    return recs


def _fit(cfg: TrainConfig, sets: list[ShardSet], base: Path, ckpts: str, run_dir: str, init: str | None):
    use_gpu = cfg.use_gpu == "yes" or (cfg.use_gpu == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    fs, path = storage.fs_path(ckpts)
    where = {"storage_path": path} if storage.is_local(fs) else \
        {"storage_path": path, "storage_filesystem": storage.arrow_fs(fs)}
    trainer = ray.train.torch.TorchTrainer(
        _loop,
        train_loop_config={"train": cfg.model_dump(), "base": str(base), "urls": [s.plain() for s in sets],
                           "metrics_dir": RunFiles(run_dir).metrics, "init": init},
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
        export_full(trainer.transformer, out / ExportFiles.TRANSFORMER, adapter_name=None)
        made = {"diffusers_transformer": ExportFiles.TRANSFORMER}
    else:
        export_diffusers_lora(trainer.transformer, out / ExportFiles.DIFFUSERS)
        export_kohya_lora(trainer.transformer, out / ExportFiles.COMFYUI)
        made = {"diffusers_lora": ExportFiles.DIFFUSERS, "comfyui_lora": ExportFiles.COMFYUI}
    if not local:
        fs.makedirs(path, exist_ok=True)
        fs.put(str(out) + "/", path, recursive=True)
        shutil.rmtree(out, ignore_errors=True)
    return {k: storage.join(out_uri, v) for k, v in made.items()}
