"""Where ingest reads from: a folder or glob, a list of URIs (text or parquet), or WebDataset tars.

Any fsspec URI works. Sources are expanded into chunks: a run of file URIs, or one tar.
A tar member's URI is fsspec's chained form `tar://<member name>::<tar uri>` (`fsspec.open` reads it as it
is); a local file may have `#` in its name. A name that is not valid UTF-8 (held by Python with lone
surrogates) is never read and never stored as it is: `printable` names it, with `\xff` for the byte 0xff.
A compressed tar's members are read through an index built in one decompression pass (store/gzindex.py).
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

from store.gzindex import GzipIndex, is_gzip
from store.storage import arrow_fs, fs_path, is_local

LIST_SUFFIXES = (".txt", ".lst", ".list")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Chunk:
    kind: str  # "files" or "tar"
    uris: tuple[str, ...]


def undecodable(name: str) -> bool:
    """Whether a name holds bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    """`text` with every undecodable byte written as `\\xNN` (any other lone surrogate as `\\uNNNN`): safe in
    JSON, parquet and a terminal."""
    if not undecodable(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _has_ext(path: str, extensions: list[str]) -> bool:
    return PurePosixPath(path).suffix.lower().lstrip(".") in extensions


def skip_reason(path: str, where: str = "file") -> str:
    """Why a listed name is not read: its ending is no image format (`file .txt`, `tar member .json`)."""
    suffix = printable(PurePosixPath(path).suffix.lower())
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


def expand_source(source: str, extensions: list[str], skipped: Counter | None = None,
                  unreadable_names: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(image file URIs, tar URIs) named by `source`, each sorted. Files of a folder or glob whose ending is
    no image format are counted in `skipped` by ending (a URI list is taken as it is). Image and tar names
    that are not valid UTF-8 are left out of both lists and put, printable, in `unreadable_names`."""
    fs, path = fs_path(source)
    kinds: dict[str, str] = {}
    if any(c in path for c in "*?["):
        entries = fs.glob(path, detail=True)  # links are listed as links ("other"), read or refused later
        found = [_qualify(fs, p) for p, e in entries.items() if e.get("type") == "file" or e.get("islink")]
        kinds = {_qualify(fs, p): e.get("type") for p, e in entries.items()}
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
    bad_names = [u for u in found if undecodable(u) and (_is_tar(u) or _has_ext(u, extensions))]
    if unreadable_names is not None:
        unreadable_names += sorted(printable(u) for u in bad_names)
    found = [u for u in found if u not in set(bad_names)] if bad_names else found
    tars = sorted(u for u in found if _is_tar(u))
    files = sorted(u for u in found if not _is_tar(u) and _has_ext(u, extensions))
    if skipped is not None:
        skipped.update(skip_reason(u) if kinds.get(u, "file") == "file" else "not a regular file (a link to a folder?)"
                       for u in found if not _is_tar(u) and not _has_ext(u, extensions))
    return files, tars


def chunks(files: list[str], tars: list[str], chunk_size: int) -> list[Chunk]:
    out = [Chunk("files", tuple(files[i : i + chunk_size])) for i in range(0, len(files), chunk_size)]
    out += [Chunk("tar", (t,)) for t in tars]
    return out


def iter_tar(uri: str, extensions: list[str], max_bytes: int, skipped: Counter | None = None,
             unreadable_names: list[str] | None = None) -> Iterator[tuple[str, bytes | None, int]]:
    """Yield (member uri, bytes or None when over max_bytes, size) for image members, streaming. Members that
    are not regular files (folders, links, devices) or whose ending is no image format are counted in
    `skipped` with the reason. Image members whose name is not valid UTF-8 are not read: their printable
    URIs go to `unreadable_names` (counted in `skipped` when it is None).

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
            if undecodable(member.name):
                if unreadable_names is not None:
                    unreadable_names.append(member_uri(uri, printable(member.name)))
                elif skipped is not None:
                    skipped["tar member name not UTF-8"] += 1
                continue
            if member.size > max_bytes:
                yield member_uri(uri, member.name), None, member.size
                continue
            fh = tar.extractfile(member)
            data = fh.read() if fh is not None else b""
            if len(data) != member.size:
                raise EOFError(f"member {member.name} ends after {len(data)} of {member.size} bytes")
            yield member_uri(uri, member.name), data, member.size


def _index_members(tar: tarfile.TarFile) -> dict[str, tuple[int, int]]:
    index: dict[str, tuple[int, int]] = {}
    try:
        for m in tar:
            if m.isfile():
                index[m.name] = (m.offset_data, m.size)
    except (tarfile.TarError, EOFError, OSError):
        pass  # a tar that breaks mid-way: the members before the break, as ingest kept them
    return index


@functools.lru_cache(maxsize=64)
def _tar_index(tar_uri: str, stamp: tuple) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size), from the headers alone (the reader seeks past every member's
    data)."""
    fs, path = fs_path(tar_uri)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return _index_members(tar)


@functools.lru_cache(maxsize=32)  # ~10 MB of snapshots a tar at most (store/gzindex.py)
def _gz_tar_index(tar_uri: str, stamp: tuple) -> tuple[dict[str, tuple[int, int]], GzipIndex | None]:
    """The member index of a compressed tar (offsets in the decompressed stream) and the gzip index that
    reads at those offsets, from one decompression pass; ({}, None) for a compression other than gzip."""
    fs, path = fs_path(tar_uri)
    with fs.open(path, "rb") as f:
        if not is_gzip(f):
            return {}, None
        gz = GzipIndex()
        try:
            with tarfile.open(fileobj=gz.stream(f), mode="r|") as tar:
                return _index_members(tar), gz
        except (tarfile.TarError, EOFError, OSError):
            return {}, gz  # broken before its first member: no member is found


def _stamp(fs, path: str) -> tuple:
    info = fs.info(path)
    return info.get("size"), info.get("mtime") or info.get("LastModified") or info.get("created")


def _member_index(tar_uri: str) -> tuple[dict[str, tuple[int, int]], GzipIndex | None] | None:
    """The index of a tar as it is now (keyed by size and mtime: a rewritten tar is indexed again), with the
    gzip index of a .tar.gz / .tgz; None for a compressed tar that is not gzip (read by a scan)."""
    fs, path = fs_path(tar_uri)
    if tar_uri.lower().endswith(".tar"):
        return _tar_index(tar_uri, _stamp(fs, path)), None
    members, gz = _gz_tar_index(tar_uri, _stamp(fs, path))
    return (members, gz) if gz is not None else None


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


@functools.lru_cache(maxsize=16)
def source_root(source: str) -> str | None:
    """The real local folder a folder or glob source lists, inside which its links must resolve; None for a
    single file, a URI list (it names what it names) or a remote source (no links)."""
    fs, path = fs_path(source)
    if not is_local(fs):
        return None
    if any(c in path for c in "*?["):
        parts = PurePosixPath(path).parts
        fixed = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
        base = str(PurePosixPath(*parts[:fixed])) if fixed else "."
    elif os.path.isdir(path):
        base = path
    else:
        return None
    return os.path.realpath(base)


def resolve_inside(uri: str, root: str) -> tuple[str, bool]:
    """(the real path of a local file of a folder source, whether it lies inside `root`)."""
    real = os.path.realpath(fs_path(uri)[1])
    return real, real == root or real.startswith(root.rstrip(os.sep) + os.sep)


class NotAFile(OSError):
    """A path in the source that is not a regular file: reading it could block (a FIFO) or never end."""


def read_uri(uri: str, max_bytes: int | None = None) -> bytes:
    """Bytes behind a catalog URI, tar members included. Raises ValueError past max_bytes.

    A member of an uncompressed tar is one seek and one read (the tar's header index is built once per
    process and kept for the 64 most recent tars), never a scan of the tar; a member of a .tar.gz / .tgz
    inflates at most gzindex.SPACING bytes before its own (the index of the 32 most recent ones is kept)."""
    parts = split_member(uri)
    if parts is not None:
        tar_uri, member = parts
        fs, path = fs_path(tar_uri)
        found = _member_index(tar_uri)
        if found is not None:
            index, gz = found
            if member not in index:
                raise FileNotFoundError(f"{member!r} not found in {tar_uri}")
            offset, size = index[member]
            with fs.open(path, "rb") as f:
                if gz is not None:
                    data = gz.read(f, offset, size)
                else:
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
