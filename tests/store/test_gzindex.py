import gzip
import io
import os
import random

import pytest

from store.gzindex import GzipIndex


def _index(blob: bytes, spacing: int) -> tuple[GzipIndex, bytes]:
    gz = GzipIndex(spacing)
    stream = gz.stream(io.BytesIO(blob))
    parts = []
    while chunk := stream.read(random.Random(len(parts)).randint(1, 20_000)):  # tarfile reads in small pieces
        parts.append(chunk)
    return gz, b"".join(parts)


@pytest.mark.parametrize("layout", ["one member", "members", "padding", "garbage after"])
def test_reads_at_any_offset_agree_with_a_plain_decompression(layout):
    rnd = random.Random(0)
    plain = b"".join(os.urandom(rnd.randint(0, 20_000)) + bytes(rnd.randint(0, 5_000)) for _ in range(60))
    cut = len(plain) // 3
    blob = {"one member": gzip.compress(plain),
            "members": gzip.compress(plain[:cut]) + gzip.compress(b"") + gzip.compress(plain[cut:]),
            "padding": gzip.compress(plain) + bytes(3000),
            "garbage after": gzip.compress(plain) + b"not gzip"}[layout]
    gz, streamed = _index(blob, spacing=64 * 1024)
    assert streamed == plain and len(gz.snapshots) > 5
    f = io.BytesIO(blob)
    for _ in range(200):
        off, size = rnd.randrange(len(plain)), rnd.randint(0, 70_000)
        assert gz.read(f, off, size) == plain[off : off + size]
    assert gz.read(f, len(plain) - 5, 100) == plain[-5:]  # fewer bytes at the end of the stream


def test_a_truncated_stream_reads_what_it_holds_and_corrupt_data_is_an_oserror():
    plain = os.urandom(300_000)
    blob = gzip.compress(plain)
    gz, streamed = _index(blob[: len(blob) // 2], spacing=32 * 1024)
    assert plain.startswith(streamed) and len(streamed) > 100_000
    assert gz.read(io.BytesIO(blob[: len(blob) // 2]), 1000, 50) == plain[1000:1050]
    bad = bytearray(gzip.compress(bytes(300_000)))
    bad[20:40] = b"\xff" * 20
    with pytest.raises(OSError, match="corrupt gzip data"):
        _index(bytes(bad), spacing=32 * 1024)


def test_reads_in_file_order_go_on_from_the_previous_read():
    plain = os.urandom(2_000_000)
    blob = gzip.compress(plain)
    gz, _ = _index(blob, spacing=512 * 1024)

    class Counting(io.BytesIO):
        n = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.n += len(data)
            return data

    f = Counting(blob)
    pieces = [gz.read(f, off, 10_000) for off in range(0, len(plain), 10_000)]
    assert b"".join(pieces) == plain
    assert Counting.n < 1.1 * len(blob)  # one pass; from the snapshot each time would be ~100 x
