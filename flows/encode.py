"""The encode job: precompute VAE latents and text embeddings of a shard set into side shards.

The side set mirrors its source one to one (shard-000000.tar -> shard-000000.tar) at
`<set>-encoded-<form>-<max_tokens>`, one Ray task per shard (a GPU each where there are GPUs). Each shard is
written under a temporary name and renamed; the manifest and the marker come last, as for every shard
set, and a complete side set is reused. Any fsspec URI: a shard is written locally and uploaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import torch

from schemas.arrow import to_table
from schemas.config import TrainConfig
from schemas.layout import ShardFiles
from schemas.records import ShardManifestRow
from store import storage
from store.shard_reader import iter_tar_samples
from store.shards import MANIFEST, TAR_MTIME, read_manifest
from trainer.encode import ENCODED_EXT, encode_sample_bytes


def encode_shard(in_url: str, out_dir: str, name: str, cfg_dict: dict, base: str) -> dict:
    """Encode one shard into out_dir/name (temporary name, then rename); returns its manifest row."""
    from trainer.components import load_pipeline

    cfg = TrainConfig(**cfg_dict)
    pipe = load_pipeline(base)
    if torch.cuda.is_available():
        pipe.to("cuda")
    final = storage.join(out_dir, name)
    fs, final_path = storage.fs_path(final)
    local = storage.is_local(fs)
    tmp = f"{final_path}{storage.TMP_TAG}{os.getpid()}" if local else \
        os.path.join(tempfile.mkdtemp(prefix="aceforge-encode-"), name)
    counts: dict[str, int] = {}
    n = 0
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for raw in iter_tar_samples(in_url):
            data = encode_sample_bytes(pipe, raw, cfg, Path(base).name)
            info = tarfile.TarInfo(f"{raw['__key__']}.{ENCODED_EXT}")
            info.size, info.mtime = len(data), TAR_MTIME
            tar.addfile(info, io.BytesIO(data))
            task = json.loads(raw["json"])["task"]
            counts[task] = counts.get(task, 0) + 1
            n += 1
    digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
    size = os.path.getsize(tmp)
    if local:
        os.replace(tmp, final_path)
    else:
        remote_tmp = storage.tmp_name(final_path)
        fs.put_file(tmp, remote_tmp)
        storage.finalize(fs, remote_tmp, final_path)
        os.remove(tmp)
    return {"shard": name, "samples": n, "bytes": size, "sha256": digest, "counts_by_task": counts}


def encode_shard_set(shard_uri: str, cfg: TrainConfig, base: Path) -> str:
    """Encode every shard of a complete shard set with Ray tasks; a complete side set is reused."""
    import ray

    out = ShardFiles(shard_uri).encoded(cfg.form, cfg.max_tokens)
    if storage.read_marker(out) is not None:
        return out
    rows = read_manifest(shard_uri)
    fs, path = storage.fs_path(out)
    fs.makedirs(path, exist_ok=True)
    storage.remove_stale_tmp(out)
    gpu = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    task = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=gpu)(encode_shard)
    refs = [task.remote(storage.absolute(storage.join(shard_uri, r.shard)), storage.absolute(out), r.shard,
                        cfg.model_dump(), str(base)) for r in rows]
    done = [ShardManifestRow(**row) for row in ray.get(refs)]
    storage.atomic_write_parquet(storage.join(out, MANIFEST), to_table(done, ShardManifestRow))
    storage.write_marker(out, {"shards": len(done), "samples": sum(r.samples for r in done),
                               "bytes": sum(r.bytes for r in done), "source": shard_uri, "base": str(base),
                               "counts_by_task": {}, "form": cfg.form, "max_tokens": cfg.max_tokens})
    return out
