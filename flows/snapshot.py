"""A training run's pin on its shard sets: the run reads the version of each set it was named after, never a mix.

A local set is snapshotted into <run>/data/<digest>/ as a complete shard set of its own: each tar of the
manifest hard-linked (no byte copied; a copy where a link fails: another filesystem, or tars this user may
not link), then the manifest and, last, the marker. This relies on the shard writer replacing a tar by
rename, never rewriting one in place (store/shards.py), so a linked tar keeps its bytes when a mining run
rewrites the set. A remote set (s3://...) is pinned by each object's size and ETag, checked when the trainer
opens the tar (trainer/data.py): a tar replaced since is refused by name, never read.

A pin stands only when the live set still has its marker and the manifest digest the run is named after once
every tar is linked or recorded: a writer removes the marker before it replaces a tar and writes it last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from schemas.layout import RunFiles
from store import storage
from store.shards import MANIFEST, read_manifest
from trainer.data import ShardSet, ShardSetChanged, object_version

SNAPSHOT_DIR = RunFiles.DATA  # <run>/data/<digest[:16]>/

__all__ = ["SNAPSHOT_DIR", "ShardSetChanged", "pin_shard_set", "release_snapshots"]


def _digest(rows) -> str:
    rows = [row.model_dump(mode="json") for row in rows]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _rows(uri: str, digest: str, when: str) -> list:
    """The live shard set's manifest rows, refused unless it is complete and of `digest`."""
    if storage.read_marker(uri) is None:
        raise ShardSetChanged(f"{uri} {when}: it has no marker now (a mining run is rewriting it?): "
                              f"train again once the shard set is complete")
    rows = read_manifest(uri)
    now = _digest(rows)
    if now != digest:
        raise ShardSetChanged(f"{uri} {when}: its manifest was {digest[:12]}, now {now[:12]}: train again to "
                              f"train on its new version")
    return rows


def _place(src: str, dst: str) -> bool:
    """`src` at `dst` by a hard link, else by a copy (True); the file appears whole or not at all."""
    tmp = storage.tmp_name(dst)
    try:
        os.link(src, tmp)
        copied = False
    except OSError:  # another filesystem, no link permission (protected_hardlinks), no links at all
        shutil.copyfile(src, tmp)
        copied = True
    os.replace(tmp, dst)
    return copied


def _snapshot(uri: str, digest: str, rows: list, into: str) -> tuple[ShardSet, dict]:
    folder = os.path.join(into, digest[:16])
    record = {"uri": uri, "manifest": digest, "snapshot": folder, "copied": 0}
    urls = tuple(os.path.join(folder, r.shard) for r in rows)
    pinned = ShardSet(urls, tuple(r.samples for r in rows))
    if storage.read_marker(folder) is not None:  # pinned before (a resumed run): the snapshot is whole
        return pinned, record
    os.makedirs(folder, exist_ok=True)
    try:
        for row, dst in zip(rows, urls):
            record["copied"] += _place(storage.join(uri, row.shard), dst)
            if os.path.getsize(dst) != row.bytes:
                raise ShardSetChanged(f"{storage.join(uri, row.shard)} changed while the run pinned it: "
                                      f"{os.path.getsize(dst)} bytes, its manifest says {row.bytes}")
        shutil.copyfile(storage.join(uri, MANIFEST), os.path.join(folder, MANIFEST))
        _rows(uri, digest, "changed while the run pinned it")
        storage.write_marker(folder, {"source": uri, "manifest": digest, "shards": len(rows),
                                      "samples": sum(r.samples for r in rows)})
        if _digest(read_manifest(folder)) != digest:
            raise ShardSetChanged(f"{uri} changed while the run pinned it: its manifest is no longer {digest[:12]}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # this call's links and copies, nothing of the set
        raise
    if record["copied"]:
        print(f"pinned {uri}: {record['copied']} of {len(rows)} tars copied into {folder} (a hard link failed: "
              f"another filesystem, or tars this user may not link)")
    return pinned, record


def _versions(uri: str, digest: str, rows: list) -> tuple[ShardSet, dict]:
    fs, _ = storage.fs_path(uri)
    urls = tuple(storage.join(uri, r.shard) for r in rows)
    versions = []
    for row, url in zip(rows, urls):
        path = storage.fs_path(url)[1]
        fs.invalidate_cache(path)
        v = object_version(fs.info(path))
        if v["size"] != row.bytes:
            raise ShardSetChanged(f"{url} changed while the run pinned it: {v['size']} bytes, its manifest says "
                                  f"{row.bytes}")
        versions.append(v)
    _rows(uri, digest, "changed while the run pinned it")
    record = {"uri": uri, "manifest": digest, "objects": {r.shard: v for r, v in zip(rows, versions)}}
    return ShardSet(urls, tuple(r.samples for r in rows), tuple(versions)), record


def pin_shard_set(uri: str, digest: str, into: str) -> tuple[ShardSet, dict]:
    """The version `digest` (its manifest digest) of the complete set at `uri`, pinned for a run: a local set
    snapshotted under `into` (<run>/data), a remote one by its objects' versions. Returns the ShardSet the run
    reads and the record identity.json keeps; a one-line ShardSetChanged when the shard set is not that version."""
    rows = _rows(uri, digest, "changed after the run was named")
    fs, _ = storage.fs_path(uri)
    if storage.is_local(fs):
        return _snapshot(storage.absolute(uri), digest, rows, storage.absolute(into))
    return _versions(uri, digest, rows)


def release_snapshots(run_dir: str) -> None:
    """Remove a finished run's snapshots (<run>/data, which only pinning writes); links cost nothing, but a
    snapshot of a shard set rewritten since holds the old tars' bytes."""
    fs, path = storage.fs_path(storage.join(run_dir, SNAPSHOT_DIR))
    if not (storage.is_local(fs) and os.path.isdir(path)):
        return
    for name in os.listdir(path):  # only the snapshots pinning wrote: a folder with pinning's own marker
        folder = os.path.join(path, name)
        marker = storage.read_marker(folder) if os.path.isdir(folder) else None
        if marker is not None and "manifest" in marker and "source" in marker:
            shutil.rmtree(folder)
    if not os.listdir(path):
        os.rmdir(path)
