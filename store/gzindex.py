"""Random access into a gzip file: one decompression pass keeps a snapshot of the decompressor every
SPACING bytes of output; a read restarts from the last snapshot before its offset, so it inflates at most
SPACING bytes it does not return, or goes on from where the previous read stopped when that is nearer
(reads in file order are one pass). Memory: about 40 KB a snapshot (zlib's state and its 32 KiB window),
at most MAX_SNAPSHOTS a file: past that the spacing doubles.

Concatenated gzip members are read one after the other; zero padding or bytes that are no gzip member
after a member end the stream, as gzip readers treat them. Corrupt data raises OSError.
"""

from __future__ import annotations

import bisect
import threading
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

GZIP_MAGIC = b"\x1f\x8b"
SPACING = 1 << 18  # output bytes between snapshots, at first
CHUNK = 1 << 15  # compressed bytes fed at a time (its output is at most ~1032x that)
MAX_SNAPSHOTS = 256  # a file's snapshots at most (~10 MB)


def is_gzip(f: BinaryIO) -> bool:
    head = f.read(2)
    f.seek(0)
    return head == GZIP_MAGIC


def _new():
    return zlib.decompressobj(zlib.MAX_WBITS | 16)


@dataclass
class _Snapshot:
    out_pos: int  # output bytes before this point
    in_pos: int  # compressed bytes consumed before this point
    state: object  # a decompressor at this point: copied before use, never advanced


def _feed(d, data: bytes) -> tuple[object, list[bytes], bool]:
    """(decompressor, output, stream ended) after feeding `data`, starting a new decompressor at each
    gzip member boundary."""
    out = []
    try:
        while data:
            if d.eof:
                if not data.strip(b"\0") or not GZIP_MAGIC.startswith(data[:2]):
                    return d, out, True  # padding or trailing bytes after the last member
                d = _new()
            out.append(d.decompress(data))
            data = d.unused_data if d.eof else b""
    except zlib.error as e:
        raise OSError(f"corrupt gzip data: {e}") from None
    return d, out, False


def _inflate(f: BinaryIO, in_pos: int, d) -> Iterator[tuple[int, bytes, object]]:
    """(compressed bytes consumed, output, decompressor) after each chunk from `in_pos`: each chunk is
    consumed whole, so a copy of the decompressor resumes exactly at that offset."""
    f.seek(in_pos)
    while chunk := f.read(CHUNK):
        d, out, ended = _feed(d, chunk)
        in_pos += len(chunk)
        yield in_pos, b"".join(out), d
        if ended:
            return


class GzipIndex:
    """Snapshots of one gzip file, taken while `stream(f)` is read to its end once."""

    def __init__(self, spacing: int | None = None):
        self.spacing = spacing or SPACING
        self.snapshots: list[_Snapshot] = [_Snapshot(0, 0, _new())]
        self._starts = [0]  # the snapshots' output positions
        self._cursor: tuple[int, bytes, int, object] | None = None  # where the last read stopped: (output
        # position of `ahead`, ahead (inflated, not yet returned), compressed position, its decompressor)
        self._lock = threading.Lock()

    def stream(self, f: BinaryIO) -> "IndexingReader":
        return IndexingReader(self, f)

    def _note(self, out_pos: int, in_pos: int, d) -> None:
        if out_pos - self.snapshots[-1].out_pos >= self.spacing:
            self.snapshots.append(_Snapshot(out_pos, in_pos, d.copy()))
            if len(self.snapshots) > MAX_SNAPSHOTS:
                self.snapshots = self.snapshots[::2]
                self.spacing *= 2
            self._starts = [s.out_pos for s in self.snapshots]

    def read(self, f: BinaryIO, offset: int, size: int) -> bytes:
        """`size` decompressed bytes from `offset` (fewer where the stream ends first)."""
        if size <= 0:
            return b""
        snap = self.snapshots[bisect.bisect_right(self._starts, offset) - 1]
        with self._lock:  # a cursor is one reader's: taken, advanced, put back
            cursor, self._cursor = self._cursor, None
        if cursor is not None and snap.out_pos <= cursor[0] <= offset:
            pos, ahead, in_pos, d = cursor
        else:
            pos, ahead, in_pos, d = snap.out_pos, b"", snap.in_pos, snap.state.copy()
        end, got = offset + size, []
        steps = _inflate(f, in_pos, d)
        while True:
            lo, hi = max(offset - pos, 0), min(end - pos, len(ahead))
            if hi > lo:
                got.append(ahead[lo:hi])
            if pos + len(ahead) >= end:
                with self._lock:
                    self._cursor = (end, ahead[end - pos:], in_pos, d)
                break
            pos += len(ahead)
            step = next(steps, None)
            if step is None:
                break
            in_pos, ahead, d = step
        return b"".join(got)


class IndexingReader:
    """A forward-only file over the decompressed stream that records the index's snapshots as it goes
    (what tarfile's stream mode reads)."""

    def __init__(self, index: GzipIndex, f: BinaryIO):
        self._steps = _inflate(f, 0, index.snapshots[0].state.copy())
        self._index = index
        self._buf = bytearray()
        self._at = 0  # read position in _buf
        self._out = 0  # output bytes produced so far

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) - self._at < n:
            step = next(self._steps, None)
            if step is None:
                break
            in_pos, out, d = step
            self._out += len(out)
            if self._at:
                del self._buf[: self._at]
                self._at = 0
            self._buf += out
            self._index._note(self._out, in_pos, d)
        stop = len(self._buf) if n < 0 else min(len(self._buf), self._at + n)
        data = bytes(self._buf[self._at : stop])
        self._at = stop
        return data
