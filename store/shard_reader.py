"""Read AceSamples back from a shard set, over any fsspec URI.

Members are grouped the way webdataset groups them (key = file name up to its first dot). A shard that
fails its manifest checksum or ends mid-member raises ShardReadError naming the shard and the last good
key; with on_error="skip" the rest of that shard is skipped and counted instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator

from schemas.records import AceSample
from schemas.io import ShardReadError, iter_tar_samples  # noqa: F401
from schemas.shard_layout import decode_sample
from store import storage
from store.shards import read_manifest


@dataclass
class ReadStats:
    samples: int = 0
    bad_shards: list[tuple[str, str]] = field(default_factory=list)  # (shard uri, reason)


def _verify(shard_uri: str, sha256: str) -> None:
    fs, path = storage.fs_path(shard_uri)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != sha256:
        raise ShardReadError(f"{shard_uri}: sha256 {h.hexdigest()} does not match the manifest's {sha256}")


def read_shard_set(uri: str, *, verify: bool = False, on_error: str = "raise",
                   stats: ReadStats | None = None) -> Iterator[AceSample]:
    """Yield every AceSample of a complete shard set, in manifest order."""
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    stats = stats if stats is not None else ReadStats()
    for row in read_manifest(uri):
        shard_uri = storage.join(uri, row.shard)
        try:
            if verify:
                _verify(shard_uri, row.sha256)
            for raw in iter_tar_samples(shard_uri):
                yield decode_sample(raw)
                stats.samples += 1
        except ShardReadError as e:
            if on_error == "raise":
                raise
            stats.bad_shards.append((shard_uri, str(e)))


@dataclass
class VerifyReport:
    samples: int = 0  # samples whose json parses and whose every image and mask decodes
    expected: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (shard or shard#key, reason)

    @property
    def ok(self) -> bool:
        return not self.bad and self.samples == self.expected


def check_sample(sample: AceSample) -> None:
    """Decode every image and mask of a sample fully; raises ValueError naming the member at fault."""
    import io

    from PIL import Image

    for name, unit in [*((f"in{i}", u) for i, u in enumerate(sample.units)), ("target", sample.target)]:
        for what, data in (("image", unit.image), ("mask", unit.mask)):
            if data is None:
                continue
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
            except Exception as e:  # PIL raises many kinds: each one is a member that does not decode
                raise ValueError(f"{name} {what} does not decode: {type(e).__name__}: {e}") from None


def verify_shard_set(uri: str, progress=None) -> VerifyReport:
    """Every shard's checksum, then every sample: its json parsed, every image and mask decoded. A damaged
    sample is reported with its key and the shard set is read on; a damaged tar is reported and the next shard
    read."""
    rep = VerifyReport()
    for row in read_manifest(uri):
        rep.expected += row.samples
        shard_uri = storage.join(uri, row.shard)
        try:
            _verify(shard_uri, row.sha256)
            for raw in iter_tar_samples(shard_uri):
                try:
                    check_sample(decode_sample(raw))
                    rep.samples += 1
                except (ValueError, KeyError) as e:
                    rep.bad.append((f"{shard_uri} sample {raw.get('__key__')!r}", str(e)))
                if progress:
                    progress(1)
        except ShardReadError as e:
            rep.bad.append((shard_uri, str(e)))
    return rep
