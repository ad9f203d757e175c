"""Ingest's chunks: read and decide every input of a chunk (a run of files, one tar, or names that
are never read), in parallel processes.

Every quarantine record is built by `quarantine`: its URI and detail are printable (no lone surrogate
reaches parquet or JSON) and the detail never quotes the file's bytes.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import re
import tarfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

from mining.image.decode import RejectedImage, decode_image, pillow_extensions
from schemas.config import IngestConfig
from schemas.records import ImageRecord, QuarantineReason, QuarantineRecord
from store.sources import (Chunk, NotAFile, iter_tar, member_uri, printable, read_uri, resolve_inside,
                           source_root, split_member)

Result = ImageRecord | QuarantineRecord

UNREADABLE_NAMES = "undecodable"  # the chunk kind of names listed but never read (not valid UTF-8)
_BYTES_LITERAL = re.compile(r"""\bb(['"]).*?(?<!\\)\1""")
_DETAIL_CHARS = 500


def image_extensions(cfg: IngestConfig) -> list[str]:
    """The endings ingest lists: the configured ones, or every format the installed Pillow decodes."""
    return list(cfg.extensions) if cfg.extensions is not None else list(pillow_extensions())


@dataclass
class Skips:
    """Tar members a chunk did not read, by reason (kept beside the records of its partition)."""
    counts: Counter


def quarantine(uri: str, reason: QuarantineReason, detail: str, source: str) -> QuarantineRecord:
    """A quarantine record whose URI and detail are printable; a bytes literal an error message quotes (a
    file's first bytes, a chunk name) is left out of the detail, which is capped in length."""
    detail = _BYTES_LITERAL.sub("b'...'", printable(detail))
    if len(detail) > _DETAIL_CHARS:
        detail = detail[: _DETAIL_CHARS - 3] + "..."
    return QuarantineRecord(uri=printable(uri), reason=reason, detail=detail, source=source)


def examine(uri: str, data: bytes, cfg: IngestConfig, source: str) -> Result:
    """Decide one input: an ImageRecord or a QuarantineRecord with its reason."""
    try:
        dec = decode_image(data, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
    except RejectedImage as e:
        return quarantine(uri, e.reason, e.detail, source)
    return ImageRecord(id=hashlib.sha256(data).hexdigest(), uri=uri, width=dec.width, height=dec.height,
                       format=dec.format, mode=dec.mode, source=source, nbytes=len(data))


def _outside(uri: str, root: str | None, cfg: IngestConfig, source: str) -> tuple[str, QuarantineRecord | None]:
    """(the path to read, or a quarantine record for a link that leads out of a folder source)."""
    if root is None:
        return uri, None
    real, inside = resolve_inside(uri, root)
    if inside or cfg.follow_symlinks_outside:
        return real, None  # read where the check looked, not through the link again
    return uri, quarantine(uri, QuarantineReason.SYMLINK_OUTSIDE_SOURCE,
                           f"a link to {real}, outside the source folder {root}: not read "
                           "(ingest.follow_symlinks_outside: true reads it)", source)


def _read_files(uris: tuple[str, ...], cfg: IngestConfig, source: str) -> list[Result]:
    out: list[Result] = []
    root = source_root(source)
    for uri in uris:
        path, refused = _outside(uri, root, cfg, source)
        if refused is not None:
            out.append(refused)
            continue
        try:
            data = read_uri(path, max_bytes=cfg.max_bytes)
        except ValueError as e:
            out.append(quarantine(uri, QuarantineReason.TOO_MANY_BYTES, str(e), source))
            continue
        except NotAFile as e:
            out.append(quarantine(uri, QuarantineReason.NOT_A_FILE, str(e), source))
            continue
        except OSError as e:
            out.append(quarantine(uri, QuarantineReason.READ_ERROR, f"{type(e).__name__}: {e}", source))
            continue
        out.append(examine(uri, data, cfg, source))
    return out


def _unreadable(names, source: str) -> list[Result]:
    return [quarantine(n, QuarantineReason.UNDECODABLE_NAME, "the name is not valid UTF-8 (\\xNN: a byte that is "
                       "not): not read; rename it to ingest it", source) for n in names]


def _read_tar(tar_uri: str, cfg: IngestConfig, source: str) -> list[Result | Skips]:
    root = source_root(source)
    if root is not None:
        _, refused = _outside(tar_uri, root, cfg, source)
        if refused is not None:
            return [refused]
    last = "<start>"
    skipped: Counter = Counter()
    bad_names: list[str] = []
    out: list[Result | Skips] = [Skips(skipped)]
    try:
        for m_uri, data, size in iter_tar(tar_uri, image_extensions(cfg), cfg.max_bytes, skipped, bad_names):
            last = m_uri
            if data is None:
                out.append(quarantine(m_uri, QuarantineReason.TOO_MANY_BYTES,
                                      f"{size} bytes > cap {cfg.max_bytes}", source))
            else:
                out.append(examine(m_uri, data, cfg, source))
    except (tarfile.TarError, EOFError, OSError) as e:
        after = split_member(last)[1] if split_member(last) else last
        out.append(quarantine(member_uri(tar_uri, f"<after {after}>"), QuarantineReason.BAD_ARCHIVE,
                              f"{type(e).__name__}: {e}", source))
    return out + _unreadable(bad_names, source)


def process_chunk(chunk: Chunk, cfg: IngestConfig, source: str) -> list[Result | Skips]:
    if chunk.kind == "files":
        return list(_read_files(chunk.uris, cfg, source))
    if chunk.kind == UNREADABLE_NAMES:
        return list(_unreadable(chunk.uris, source))
    (tar_uri,) = chunk.uris
    return _read_tar(tar_uri, cfg, source)


def chunk_inputs(chunk: Chunk) -> int:
    """Inputs a chunk stands for in the progress bar (a tar: one)."""
    return 1 if chunk.kind == "tar" else len(chunk.uris)


def run_chunks(chunks: list[Chunk], cfg: IngestConfig, source: str,
               progress: Callable[[int], None] | None) -> list[Result | Skips]:
    results: list[Result | Skips] = []
    workers = min(cfg.resolved_workers(), max(1, len(chunks)))
    if workers <= 1:
        for c in chunks:
            results += process_chunk(c, cfg, source)
            if progress:
                progress(chunk_inputs(c))
        return results
    # spawn: the parent may hold threads (progress bars, Ray) that fork would copy mid-state
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(process_chunk, c, cfg, source): c for c in chunks}
        for fut in as_completed(futures):
            c = futures[fut]
            results += fut.result()
            if progress:
                progress(chunk_inputs(c))
    return results
