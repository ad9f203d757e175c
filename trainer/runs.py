"""What a training run is: its identity, its folder's record of it, its checkpoints, and `init_from`.

A run is named by what it trains on unless `train.run_name` names it: the digests of its shard sets'
manifests, the training settings that change the weights it ends with, and the weights it starts from
(`init_from`). `identity.json` in the run folder records that identity; a run folder that holds another
identity is refused, never resumed, so a name cannot silently continue on other data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from schemas import io as storage
from schemas.config import TrainConfig
from schemas.layout import CheckpointFiles, RunFiles
from trainer.components import FILL_IN_CHANNELS

IDENTITY_FILE = RunFiles.IDENTITY
STATE_META = CheckpointFiles.STATE
STATE_WEIGHTS = CheckpointFiles.WEIGHTS
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train names each checkpoint folder checkpoint_<timestamp>
LORA_FILE_SUFFIX = ".safetensors"  # init_from naming one file: a LoRA (trainer/released.py)

# TrainConfig fields left out of a run's identity: they do not change the weights a run ends with (where it
# runs, how often it reports, saves or evaluates; the name itself). max_steps is in (the cosine schedule is
# cut to it: a longer run is another run, not a continuation of a finished one), and so is num_workers
# (batch_size is per worker: the global batch and each worker's share of the data follow it).
NOT_IN_IDENTITY = frozenset({"run_name", "checkpoint_every", "log_every", "cpus_per_worker", "use_gpu", "fsdp",
                             "gradient_checkpointing", "init_from",
                             # what is measured and shown at checkpoints (eval_fraction is in: it decides
                             # which samples train)
                             "eval_samples", "eval_draws", "eval_images", "eval_infer_steps", "ui_every",
                             # a leakage drop trains on another set (its own manifest digest); refuse trains as is
                             "leakage_source", "leakage", "leakage_levels"})


def check_compatible(meta: dict, cfg: TrainConfig, what: str, in_channels: int | None = None) -> None:
    """A checkpoint's state.json against the config that would load it: mode, LoRA fusion and rank, and (given
    the base's `in_channels`) the base's input layout. A run started from a LoRA file takes its ranks from the
    file, not from lora_rank (the weights' shapes are checked when they load)."""
    if meta["mode"] != cfg.mode:
        raise ValueError(f"{what} is {meta['mode']} training, the config asks for {cfg.mode}")
    if cfg.mode == "lora" and meta.get("lora_fused", False) != cfg.lora_fused:
        raise ValueError(f"{what} has lora_fused={meta.get('lora_fused', False)}, the config asks "
                         f"for {cfg.lora_fused}")
    from_file = bool(cfg.init_from) and cfg.init_from.rstrip("/").endswith(LORA_FILE_SUFFIX)
    if cfg.mode == "lora" and not from_file:
        if meta.get("lora_rank", cfg.lora_rank) != cfg.lora_rank:
            raise ValueError(f"{what} has lora_rank={meta['lora_rank']}, the config asks for {cfg.lora_rank}")
        if meta.get("lora_per_module"):
            raise ValueError(f"{what} has per-module ranks or alphas (a run started from a LoRA file): start from "
                             f"that run's comfyui_lora export (a LoRA file) instead")
        alpha = float(cfg.lora_rank if cfg.lora_alpha is None else cfg.lora_alpha)
        if float(meta.get("lora_alpha", alpha)) != alpha:
            raise ValueError(f"{what} has lora_alpha={meta['lora_alpha']}, the config gives {alpha} "
                             f"(train.lora_alpha; unset: lora_rank)")
    theirs = meta.get("in_channels", FILL_IN_CHANNELS)  # checkpoints written before 448 bases: FLUX.1-Fill's
    if in_channels is not None and theirs != in_channels:
        raise ValueError(f"{what} was trained on a {theirs}-channel base, this base takes {in_channels} input "
                         f"channels (384: FLUX.1-Fill; 448: the released ACE++ full fine-tune)")


def base_transformer_config(cfg: TrainConfig) -> dict:
    """The transformer config of the run's base (no weights read): 'tiny' is the toy model's."""
    from trainer.components import tiny_transformer_config, transformer_config

    return tiny_transformer_config() if cfg.base == "tiny" else transformer_config(cfg.base)


@dataclass(frozen=True)
class Checkpoint:
    uri: str
    meta: dict  # its state.json

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _read_json(uri: str) -> dict | None:
    fs, path = storage.fs_path(uri)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def _uri(fs, path: str, like: str) -> str:
    """`path` as listed by `fs`, with the scheme of `like` put back for a remote filesystem."""
    if "://" not in like or "://" in path:
        return path
    return f"{like.split('://', 1)[0]}://{path}"


def checkpoints(run_dir: str) -> list[Checkpoint]:
    """The run's complete checkpoints (those with a state.json), oldest first (by step, then name)."""
    fs, path = storage.fs_path(run_dir)
    if not fs.exists(path):
        return []
    found = []
    for p in fs.ls(path, detail=False):
        if p.rstrip("/").rsplit("/", 1)[-1].startswith(CHECKPOINT_PREFIX):
            uri = _uri(fs, p, run_dir)
            meta = _read_json(storage.join(uri, STATE_META))
            if meta is not None:
                found.append(Checkpoint(uri, meta))
    return sorted(found, key=lambda c: (c.step, c.uri))


def latest_checkpoint(run_dir: str) -> Checkpoint | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


@dataclass(frozen=True)
class InitSource:
    """The weights a run starts from: a checkpoint and the identity of the run that wrote it (if recorded), or
    a LoRA file in kohya / ComfyUI keys (a released ACE++ LoRA, or a kohya export)."""

    checkpoint: Checkpoint | None
    run_identity: str | None
    lora_file: object | None = None  # trainer.released.LoraFile

    @property
    def uri(self) -> str:
        return self.lora_file.uri if self.lora_file is not None else self.checkpoint.uri

    def identity(self) -> dict:
        """Content, not location: the writing run's identity and the step, when the run recorded one; a LoRA
        file's sha256."""
        if self.lora_file is not None:
            return self.lora_file.identity()
        if self.run_identity:
            return {"run": self.run_identity, "step": self.checkpoint.step}
        return {"checkpoint": self.checkpoint.uri, "step": self.checkpoint.step}


def resolve_lora_file(uri: str, cfg: TrainConfig) -> InitSource:
    """`init_from` naming a LoRA file: read, mapped onto the base's modules (its config only) and checked; a
    one-line ValueError naming the key that does not fit."""
    from trainer.released import check_lora_file, read_lora_file

    if cfg.mode != "lora":
        raise ValueError(f"init_from {uri} is a LoRA file: it starts LoRA training (train.mode lora), the config "
                         f"asks for {cfg.mode}")
    if not cfg.lora_fused:
        raise ValueError(f"init_from {uri} is a LoRA file with one down projection per fused BFL linear: it needs "
                         f"train.lora_fused true")
    lora = read_lora_file(uri)
    check_lora_file(lora, base_transformer_config(cfg))
    return InitSource(None, None, lora)


def resolve_init(uri: str, cfg: TrainConfig) -> InitSource:
    """`init_from` -> the checkpoint it means (a checkpoint folder, or a run folder's latest checkpoint), or a
    LoRA file (`*.safetensors`, kohya / ComfyUI keys), checked against the config and the base's layout; a
    one-line ValueError when it is missing or does not fit."""
    from trainer.released import is_lora_file

    uri = storage.absolute(uri.rstrip("/")) or uri
    if not storage.exists(uri):
        raise ValueError(f"init_from {uri} does not exist")
    if is_lora_file(uri):
        return resolve_lora_file(uri, cfg)
    meta = _read_json(storage.join(uri, STATE_META))
    if meta is not None:
        ckpt, run_dir = Checkpoint(uri, meta), storage.parent(uri)
    else:
        ckpt, run_dir = latest_checkpoint(uri), uri
        if ckpt is None:
            raise ValueError(f"init_from {uri} is neither a checkpoint folder ({STATE_META}) nor a run folder "
                             f"holding one ({CHECKPOINT_PREFIX}*) nor a LoRA file (*{LORA_FILE_SUFFIX})")
    if not storage.exists(storage.join(ckpt.uri, STATE_WEIGHTS)):
        raise ValueError(f"init_from {ckpt.uri} has no {STATE_WEIGHTS}")
    try:
        in_channels = base_transformer_config(cfg)["in_channels"]
    except FileNotFoundError:  # no base folder yet: the workers check the layout when they load the weights
        in_channels = None
    check_compatible(ckpt.meta, cfg, f"init_from {ckpt.uri}", in_channels)
    recorded = _read_json(storage.join(run_dir, IDENTITY_FILE))
    return InitSource(ckpt, recorded["hash"] if recorded else None)


def next_phase(train: TrainConfig, run_dir: str) -> TrainConfig:
    """The config of the phase after a run of `train` (in `run_dir`): it starts from that run's weights. When
    that run began at a LoRA file whose modules share one rank and alpha, the next phase takes that rank and
    alpha (its recipe adapter then loads the run's weights at their scale; a file of mixed ranks stays refused
    by check_compatible)."""
    from trainer.released import check_lora_file, is_lora_file, read_lora_file

    update: dict = {"init_from": run_dir}
    if train.mode == "lora" and train.init_from and is_lora_file(train.init_from):
        layout = check_lora_file(read_lora_file(train.init_from), base_transformer_config(train))
        if not layout.rank_pattern() and not layout.alpha_pattern():
            update.update(lora_rank=layout.rank, lora_alpha=layout.alpha)
    return train.model_copy(update=update)


def run_identity(cfg: TrainConfig, set_digests: list[str], init: InitSource | None = None) -> dict:
    """What a run trains on: its shard sets (manifest digests, in the order trained), the settings that change
    its result (every TrainConfig field but NOT_IN_IDENTITY) and its initial weights. `hash` is their
    sha256."""
    train = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_IN_IDENTITY}
    body = {"version": 1, "shard_sets": list(set_digests), "train": train,
            "init_from": init.identity() if init else None}
    return {"hash": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(), **body}


def derived_name(identity: dict) -> str:
    return f"p{identity['train']['phase']}-{identity['hash'][:12]}"


def claim_run_dir(run_dir: str, identity: dict, sources: list[str] | None = None) -> None:
    """Record `identity` in a new run folder, accept a folder that records the same, refuse any other (a
    different identity, or checkpoints without a recorded identity) in one line."""
    rec_uri = storage.join(run_dir, IDENTITY_FILE)
    recorded = _read_json(rec_uri)
    name = run_dir.rstrip("/").rsplit("/", 1)[-1]
    if recorded is not None:
        if recorded.get("hash") != identity["hash"]:
            raise ValueError(f"run {name} already holds a run of other shards or settings (identity "
                             f"{recorded.get('hash', '?')[:12]}, this one {identity['hash'][:12]}): leave "
                             f"train.run_name unset to get a run of its own, or choose another name")
        return
    if checkpoints(run_dir):
        raise ValueError(f"run {name} has checkpoints but no {IDENTITY_FILE} (written before run identities "
                         f"were recorded): choose another train.run_name, or move {run_dir} away")
    storage.atomic_write_bytes(rec_uri, json.dumps({**identity, "sources": sources or []}, indent=1).encode())


def record_sets(run_dir: str, sets: list[dict]) -> None:
    """Record in the run's identity.json (claimed before) how each shard set was pinned for the run (its
    manifest digest, and its snapshot folder or its objects' versions: flows/snapshot.py)."""
    uri = storage.join(run_dir, IDENTITY_FILE)
    recorded = _read_json(uri)
    if recorded is None:
        raise ValueError(f"{run_dir} has no {IDENTITY_FILE} to record its shard sets in")
    storage.atomic_write_bytes(uri, json.dumps({**recorded, "sets": sets}, indent=1).encode())


@contextmanager
def local_folder(uri: str) -> Iterator[Path]:
    """A checkpoint folder on the local disk: itself, or a temporary copy of a remote one."""
    fs, path = storage.fs_path(uri)
    if storage.is_local(fs):
        yield Path(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="aceforge-init-"))
    try:
        fs.get(path.rstrip("/") + "/", str(tmp / "ckpt") + "/", recursive=True)
        yield tmp / "ckpt"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
