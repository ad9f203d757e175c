"""Where ingest reads from: a folder or glob, a list of URIs (text or parquet), or WebDataset tars.

Any fsspec URI works. Sources are expanded into work units: a chunk of file URIs, or one tar.
A tar member's URI is fsspec's chained form `tar://<member name>::<tar uri>` (`fsspec.open` reads it as it
is); a local file may have `#` in its name.
"""

from __future__ import annotations

import functools
import os
import stat
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import pyarrow.parquet as pq

from tasks.storage import arrow_fs, fs_path, is_local

LIST_SUFFIXES = (".txt", ".lst", ".list")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class WorkUnit:
    kind: str  # "files" or "tar"
    uris: tuple[str, ...]


def _has_ext(path: str, extensions: list[str]) -> bool:
    return PurePosixPath(path).suffix.lower().lstrip(".") in extensions


def skip_reason(path: str, where: str = "file") -> str:
    """Why a listed name is not read: its ending is no image format (`file .txt`, `tar member .json`)."""
    suffix = PurePosixPath(path).suffix.lower()
    return f"{where} {suffix or '(no ending)'}"


def _is_tar(path: str) -> bool:
    return path.lower().endswith(TAR_SUFFIXES)


def _qualify(fs, path: str) -> str:
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if proto in ("file", "local") else f"{proto}://{path}"


def _read_list(uri: str) -> list[str]:
    fs, path = fs_path(uri)
    if path.endswith(".parquet"):
        table = pq.read_table(path, filesystem=arrow_fs(fs))  # never a Python file: see test_layers
        if "uri" not in table.column_names:
            raise ValueError(f"{uri}: a URI list in parquet needs a 'uri' column; it has {table.column_names}")
        return [u for u in table.column("uri").to_pylist() if u]
    with fs.open(path, "rt", encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def expand_source(source: str, extensions: list[str],
                  skipped: Counter | None = None) -> tuple[list[str], list[str]]:
    """(image file URIs, tar URIs) named by `source`, each sorted. Files of a folder or glob whose ending is
    no image format are counted in `skipped` by ending (a URI list is taken as it is)."""
    fs, path = fs_path(source)
    kinds: dict[str, str] = {}
    if any(c in path for c in "*?["):
        found = [_qualify(fs, p) for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        entries = fs.find(path, detail=True)
        found = [_qualify(fs, p) for p in entries]
        kinds = {_qualify(fs, p): e.get("type") for p, e in entries.items()}
    elif path.endswith(LIST_SUFFIXES) or path.endswith(".parquet"):
        found = _read_list(source)
        tars = sorted(u for u in found if _is_tar(u))
        return sorted(u for u in found if not _is_tar(u)), tars
    elif fs.exists(path):
        found = [source]
    else:
        raise FileNotFoundError(f"ingest source {source!r} does not exist")
    tars = sorted(u for u in found if _is_tar(u))
    files = sorted(u for u in found if not _is_tar(u) and _has_ext(u, extensions))
    if skipped is not None:
        skipped.update(skip_reason(u) if kinds.get(u, "file") == "file" else "not a regular file (a link to a folder?)"
                       for u in found if not _is_tar(u) and not _has_ext(u, extensions))
    return files, tars


def work_units(files: list[str], tars: list[str], chunk_size: int) -> list[WorkUnit]:
    units = [WorkUnit("files", tuple(files[i : i + chunk_size])) for i in range(0, len(files), chunk_size)]
    units += [WorkUnit("tar", (t,)) for t in tars]
    return units


def iter_tar(uri: str, extensions: list[str], max_bytes: int,
             skipped: Counter | None = None) -> Iterator[tuple[str, bytes | None, int]]:
    """Yield (member uri, bytes or None when over max_bytes, size) for image members, streaming. Members that
    are not regular files (folders, links, devices) or whose ending is no image format are counted in
    `skipped` with the reason.

    A tar that breaks mid-way raises tarfile.TarError / EOFError / OSError after yielding what it could.
    """
    fs, path = fs_path(uri)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if not member.isfile() or not _has_ext(member.name, extensions):
                if skipped is not None and not member.isdir():  # folders are structure, as in a listing
                    skipped[skip_reason(member.name, "tar member") if member.isfile() else
                            "tar member not a regular file"] += 1
                continue
            if member.size > max_bytes:
                yield member_uri(uri, member.name), None, member.size
                continue
            fh = tar.extractfile(member)
            data = fh.read() if fh is not None else b""
            if len(data) != member.size:
                raise EOFError(f"member {member.name} ends after {len(data)} of {member.size} bytes")
            yield member_uri(uri, member.name), data, member.size


@functools.lru_cache(maxsize=64)
def _tar_index(tar_uri: str, stamp: tuple) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size), from the headers alone (the reader seeks past every member's
    data). A tar that breaks mid-way indexes the members before the break, as ingest kept them."""
    fs, path = fs_path(tar_uri)
    index: dict[str, tuple[int, int]] = {}
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        try:
            for m in tar:
                if m.isfile():
                    index[m.name] = (m.offset_data, m.size)
        except (tarfile.TarError, EOFError, OSError):
            pass
    return index


def _member_index(tar_uri: str) -> dict[str, tuple[int, int]] | None:
    """The index of an uncompressed tar as it is now (keyed by size and mtime: a rewritten tar is indexed
    again); None for a compressed one, which cannot be read at an offset."""
    if not tar_uri.lower().endswith(".tar"):
        return None
    fs, path = fs_path(tar_uri)
    info = fs.info(path)
    return _tar_index(tar_uri, (info.get("size"), info.get("mtime") or info.get("LastModified") or info.get("created")))


def member_uri(tar_uri: str, member: str) -> str:
    """The URI of a tar member: fsspec's chained URL, which no plain file name or URI collides with."""
    return f"tar://{member}::{tar_uri}"


def split_member(uri: str) -> tuple[str, str] | None:
    """(tar uri, member name) of a member URI; None for any other URI. The older form `<tar>#<member>`
    (catalogs made before the chained form) is still read when the file before the `#` is a tar that
    exists and no file has the whole name."""
    if uri.startswith("tar://") and "::" in uri:
        member, tar_uri = uri[len("tar://"):].split("::", 1)
        return tar_uri, member
    if "#" in uri:
        tar_uri, member = uri.split("#", 1)
        if _is_tar(tar_uri):
            fs, path = fs_path(uri)
            if not fs.exists(path) and fs.exists(fs_path(tar_uri)[1]):
                return tar_uri, member
    return None


class NotAFile(OSError):
    """A path in the source that is not a regular file: reading it could block (a FIFO) or never end."""


def read_uri(uri: str, max_bytes: int | None = None) -> bytes:
    """Bytes behind a catalog URI, tar members included. Raises ValueError past max_bytes.

    A member of an uncompressed tar is one seek and one read (the tar's header index is built once per
    process and kept for the 64 most recent tars), never a scan of the tar."""
    parts = split_member(uri)
    if parts is not None:
        tar_uri, member = parts
        fs, path = fs_path(tar_uri)
        index = _member_index(tar_uri)
        if index is not None:
            if member not in index:
                raise FileNotFoundError(f"{member!r} not found in {tar_uri}")
            offset, size = index[member]
            with fs.open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
            if len(data) != size:
                raise EOFError(f"{uri}: {len(data)} of {size} bytes")
            return data
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for m in tar:
                if m.name == member:
                    fh = tar.extractfile(m)
                    return fh.read() if fh is not None else b""
        raise FileNotFoundError(f"{member!r} not found in {tar_uri}")
    fs, path = fs_path(uri)
    if is_local(fs) and not stat.S_ISREG(os.stat(path).st_mode):
        raise NotAFile(f"{uri} is not a regular file (a FIFO, socket or device): not opened")
    with fs.open(path, "rb") as f:
        data = f.read(max_bytes + 1) if max_bytes is not None else f.read()
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{uri} is larger than {max_bytes} bytes")
    return data
