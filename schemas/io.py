"""Storage primitives shared by every layer: fsspec URIs, atomic writes, and tar members grouped into samples.

Below store/, stages/ and trainer/ so that both read and write the same way (trainer/ imports schemas only).
"""

from __future__ import annotations

import os
import tarfile
import uuid
from typing import Any, Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_TAG = ".tmp-"


def fs_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def absolute(uri: str | None) -> str | None:
    """A local path made absolute (it may be read in another process, in another folder); a URI with a
    scheme as given."""
    if uri is None or "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def exists(uri: str) -> bool:
    fs, path = fs_path(uri)
    return fs.exists(path)


def tmp_name(path: str) -> str:
    return f"{path}{TMP_TAG}{uuid.uuid4().hex[:8]}"


def finalize(fs: fsspec.AbstractFileSystem, tmp: str, final: str) -> None:
    """Move a finished temporary file to its final name (an atomic rename on local disks)."""
    if is_local(fs):
        os.replace(tmp, final)
    else:
        fs.mv(tmp, final)


def atomic_write_bytes(uri: str, data: bytes) -> None:
    fs, path = fs_path(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    tmp = tmp_name(path)
    with fs.open(tmp, "wb") as f:
        f.write(data)
    finalize(fs, tmp, path)


def arrow_fs(fs: fsspec.AbstractFileSystem):
    """pyarrow reads by path through this filesystem: never through a Python file object, which a pyarrow
    pool thread could free at interpreter exit (an abort with exit code 134)."""
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem() if is_local(fs) else pafs.PyFileSystem(pafs.FSSpecHandler(fs))


class ShardReadError(RuntimeError):
    pass


def key_and_field(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        raise ShardReadError(f"member {name!r} has no extension")
    prefix = name[: len(name) - len(base)]
    key, ext = base.split(".", 1)
    return prefix + key, ext


def iter_tar_samples(shard_uri: str, check: Callable[[Any], None] | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples ({'__key__', '<ext>': bytes}) of one tar, in order. `check(f)` sees the opened file before
    a byte is read (an object store's file pins the version it opened: its size and ETag)."""
    fs, path = fs_path(shard_uri)
    current: dict[str, Any] | None = None
    last_key = "<none>"
    try:
        with fs.open(path, "rb") as f:
            if check is not None:
                check(f)
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = key_and_field(member.name)
                    fh = tar.extractfile(member)
                    data = fh.read() if fh is not None else b""
                    if len(data) != member.size:
                        raise EOFError(f"{member.name}: {len(data)} of {member.size} bytes")
                    if current is not None and current["__key__"] != key:
                        last_key = current["__key__"]
                        yield current
                        current = None
                    if current is None:
                        current = {"__key__": key, "__url__": shard_uri}
                    current[ext] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardReadError(f"{shard_uri} is damaged after sample {last_key!r}: {type(e).__name__}: {e}") from None
    if current is not None:
        yield current
