"""WebDataset shard sets: write AceSamples through webdataset's ShardWriter, read them back.

A shard set directory holds <prefix>-NNNNNN.tar, one <prefix>-NNNNNN.stats.json per finished shard,
manifest.parquet and, last, the completion marker. A tar is written under a temporary name and renamed
when closed; a shard counts as done only once its stats file (written after the rename) exists. A re-run
of an interrupted write removes temporary files, keeps the finished shards (checking that the input
replays the same keys) and writes the rest; a re-run of a complete set is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import yaml
from PIL import Image

from mining.image.decode import encode_image
from schemas.arrow import from_table, to_table
from schemas.config import ShardConfig
from schemas.layout import ShardFiles
from schemas.records import AceSample, ConditionUnit, ShardManifestRow
from schemas.shard_layout import encode_sample, sanitize_key
from store import storage

MANIFEST = ShardFiles.MANIFEST
CARD = ShardFiles.CARD  # a dataset card whose features let `datasets.load_dataset(<set folder>)` read every field
TAR_MTIME = 0  # fixed member mtime: the same samples give byte-identical tars


class ShardInputChanged(RuntimeError):
    pass


@dataclass
class ShardSetReport:
    uri: str
    shards: int
    samples: int
    bytes: int
    counts_by_task: dict[str, int]
    skipped_existing: bool = False
    resumed_shards: int = 0


def load_done_stats(out_uri: str, prefix: str) -> list[dict]:
    """Stats of the finished shards 0..k-1 (contiguous); later or orphaned files are removed."""
    fs, path = storage.fs_path(out_uri)
    done: list[dict] = []
    while True:
        stats_path = f"{path}/{ShardFiles.stats_name(prefix, len(done))}"
        if not fs.exists(stats_path) or not fs.exists(f"{path}/{ShardFiles.tar_name(prefix, len(done))}"):
            break
        with fs.open(stats_path, "rb") as f:
            done.append(json.loads(f.read()))
    _drop_from(out_uri, prefix, len(done))  # a tar renamed but never given stats, or a shard after a gap
    return done


class _HashingFile:
    """A file opened for writing that hashes and counts what goes through it (no re-read afterwards)."""

    def __init__(self, path: str):
        self.f = open(path, "wb")
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.nbytes += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class _Writer:
    """ShardWriter plus the bookkeeping that makes each finished shard atomic and accounted for."""

    def __init__(self, out_uri: str, cfg: ShardConfig, start: int):
        self.fs, self.path = storage.fs_path(out_uri)
        self.local = storage.is_local(self.fs)
        self.staging = self.path if self.local else tempfile.mkdtemp(prefix="aceforge-shards-")
        self.cfg = cfg
        self.start = start
        self.index = start
        self.keys: list[str] = []
        self.prints: list[str] = []
        self.tasks: Counter[str] = Counter()
        self.fields: set[str] = set()
        self.aborted = False
        self.sink = None  # a webdataset ShardWriter, opened with the first sample
        self.finished: list[dict] = []
        self.stream: _HashingFile | None = None

    def _open(self, fname: str) -> _HashingFile:
        self.stream = _HashingFile(fname)
        return self.stream

    def _post(self, fname: str) -> None:
        assert self.stream is not None
        self.stream.close()
        if self.aborted:
            os.remove(fname)
            return
        name = ShardFiles.tar_name(self.cfg.prefix, self.index)
        stats = {"shard": name, "samples": len(self.keys), "bytes": self.stream.nbytes,
                 "sha256": self.stream.sha.hexdigest(), "counts_by_task": dict(sorted(self.tasks.items())),
                 "keys": self.keys, "fingerprints": self.prints, "fields": sorted(self.fields),
                 "image_ext": self.cfg.image_ext}
        final = f"{self.path}/{name}"
        if self.local:
            os.replace(fname, final)
        else:
            remote_tmp = storage.tmp_name(final)
            self.fs.put_file(fname, remote_tmp)
            storage.finalize(self.fs, remote_tmp, final)
            os.remove(fname)
        storage.atomic_write_bytes(storage.join(self._uri_dir(), ShardFiles.stats_name(self.cfg.prefix, self.index)),
                                   json.dumps(stats).encode())
        self.finished.append(stats)
        self.index += 1
        self.keys, self.prints, self.tasks, self.fields = [], [], Counter(), set()

    def _uri_dir(self) -> str:
        proto = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return self.path if self.local else f"{proto}://{self.path}"

    def write(self, raw: dict, task: str, fingerprint: str = "") -> None:
        if self.sink is None:
            import webdataset as wds  # imports torch: only where a shard is written, never in the flow process

            pattern = f"{self.staging}/{ShardFiles.tar_pattern(self.cfg.prefix)}{storage.TMP_TAG}{os.getpid()}"
            self.sink = wds.ShardWriter(pattern, maxcount=self.cfg.maxcount, maxsize=self.cfg.maxsize,
                                        post=self._post, start_shard=self.start, verbose=0, opener=self._open,
                                        encoder=False, mtime=TAR_MTIME)
        self.sink.write(raw)  # may close the previous shard first, which runs _post for it
        self.fields.update(k for k in raw if not k.startswith("__"))
        self.keys.append(raw["__key__"])
        self.prints.append(fingerprint)
        self.tasks[task] += 1

    def close(self, aborted: bool = False) -> None:
        self.aborted = aborted
        if self.sink is not None:
            self.sink.close()
            self.sink = None


def _as_ext(unit: ConditionUnit, cfg: ShardConfig, key: str) -> ConditionUnit:
    if unit.image_ext == cfg.image_ext:
        return unit
    try:
        with Image.open(io.BytesIO(unit.image)) as im:
            im.load()
            data = encode_image(im if cfg.image_ext == "png" else im.convert("RGB"), cfg.image_ext,
                                quality=cfg.jpeg_quality)
    except (OSError, ValueError) as e:
        raise ValueError(f"sample {key!r}: its {unit.role.value} image ({unit.image_ext}) does not decode: {e}") from None
    return unit.model_copy(update={"image": data, "image_ext": cfg.image_ext})


def one_extension(sample: AceSample, cfg: ShardConfig) -> AceSample:
    """The sample with every image in the shard set's one extension (`cfg.image_ext`): readers that type a field by
    its extension (HF datasets, img2dataset conventions) see one type per field. Images already stored that
    way keep their bytes; others are decoded and re-encoded (losslessly for png)."""
    units = [_as_ext(u, cfg, sample.key) for u in sample.units]
    target = _as_ext(sample.target, cfg, sample.key)
    if target is sample.target and all(a is b for a, b in zip(units, sample.units)):
        return sample
    return sample.model_copy(update={"units": units, "target": target})


def _check_fields(fields: Iterable[str], out_uri: str) -> list[str]:
    """The shard set's fields, sorted; an error when one field stem (in0, target.mask...) has two extensions."""
    names = sorted(set(fields))
    by_stem: dict[str, str] = {}
    for f in names:
        stem, _, ext = f.rpartition(".")
        if stem and by_stem.setdefault(stem, ext) != ext:
            raise ValueError(f"{out_uri}: field {stem} is stored as both .{by_stem[stem]} and .{ext} (shards written "
                             f"with another shards.image_ext?): remove the shard set and write it again")
    return names


def _tar_fields(out_uri: str, shard: str) -> set[str]:
    """Field names in a finished shard (written before stats recorded them), from the tar headers."""
    import tarfile

    fs, path = storage.fs_path(storage.join(out_uri, shard))
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        return {m.name.split(".", 1)[1] for m in tar if m.isfile() and "." in m.name}


def write_card(out_uri: str, fields: list[str], counts_by_task: dict[str, int], samples: int) -> None:
    """README.md with the Hugging Face dataset-card header that types every field the shard set holds: without it
    `datasets` infers the features from the first 5 samples, and a field they lack (a reference image, a
    mask) is dropped or refused."""
    def dtype(field: str) -> str:
        ext = field.rsplit(".", 1)[-1]
        return {"json": "json", "txt": "string"}.get(ext, "image")

    features = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    features += [{"name": f, "dtype": dtype(f)} for f in fields]
    header = {"configs": [{"config_name": "default", "data_files": [{"split": "train", "path": ShardFiles.TAR_GLOB}]}],
              "dataset_info": {"features": features}}
    body = (f"# aceforge shard set\n\n{samples} samples in WebDataset tars; samples per task: "
            f"{json.dumps(counts_by_task)}.\nA field a sample does not have (a second input, a mask) reads as "
            f"None. Layout: aceforge's schemas/shard_layout.py.\n")
    storage.atomic_write_bytes(storage.join(out_uri, CARD),
                               ("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n" + body).encode())


def _resolve_ext(cfg: ShardConfig, done: list[dict], it):
    """`image_ext: auto` made concrete: the extension the finished shards were written with, else the first
    sample's target's (the input is peeked, not consumed)."""
    if cfg.image_ext != "auto":
        return cfg, it
    if done and done[0].get("image_ext"):
        return cfg.model_copy(update={"image_ext": done[0]["image_ext"]}), it
    first = next(it, None)
    if first is None:
        return cfg.model_copy(update={"image_ext": "png"}), iter(())
    return cfg.model_copy(update={"image_ext": first.target.image_ext}), itertools.chain([first], it)


def sample_fingerprint(sample: AceSample, cfg: ShardConfig | None = None) -> str:
    """What a sample says besides its pixels (task, instruction, caption, where its images came from), of the
    sample as given (before any re-encoding) and the shard set's image extension: a kept shard must match this too,
    not only the keys (a new instruction keeps the key)."""
    data = [sample.key, sample.task, sample.instruction, sample.caption, sample.lineage.model_dump(mode="json"),
            cfg.image_ext if cfg is not None else None,
            [(u.role.value, u.image_ext, hashlib.sha256(u.image).hexdigest()[:16]) for u in sample.units],
            hashlib.sha256(sample.target.image).hexdigest()[:16]]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _drop_from(out_uri: str, prefix: str, index: int) -> None:
    """Remove this writer's shards (tars and stats) from `index` on."""
    fs, path = storage.fs_path(out_uri)
    for p in fs.ls(path, detail=False) if fs.exists(path) else []:  # an object store has no empty folders
        name = os.path.basename(p)
        if name.startswith(f"{prefix}-") and (name.endswith(ShardFiles.TAR) or name.endswith(ShardFiles.STATS)):
            number = name[len(prefix) + 1 : len(prefix) + 7]
            if number.isdigit() and name[len(prefix) + 7] == "." and int(number) >= index:  # not a unit's
                fs.rm(p)


def write_shard_set(samples: Iterable[AceSample], out_uri: str, cfg: ShardConfig | None = None, *,
                    progress: Callable[[int], None] | None = None, extend: bool = False,
                    marker_extra: Callable[[], dict] | None = None) -> ShardSetReport:
    """Write `samples` as a shard set. Without `extend`, finished shards of an interrupted write are kept
    when the input replays their keys, and an input that changed is an error. With `extend` (a shard set whose
    input grew), the finished shards are kept up to the first one whose keys the input no longer replays,
    that one and the ones after it are written again, and a last shard left short is reopened.
    `marker_extra` is called once the input is exhausted; what it returns joins the shard set's marker."""
    cfg = cfg or ShardConfig()
    marker = storage.read_marker(out_uri)
    if marker is not None:
        return ShardSetReport(out_uri, marker["shards"], marker["samples"], marker["bytes"],
                              marker["counts_by_task"], skipped_existing=True)
    fs, path = storage.fs_path(out_uri)
    fs.makedirs(path, exist_ok=True)
    storage.remove_stale_tmp(out_uri)
    done = load_done_stats(out_uri, cfg.prefix)

    it = iter(samples)  # converted to the shard set's extension only when written: a replay decodes nothing
    cfg, it = _resolve_ext(cfg, done, it)
    seen_keys: set[str] = set()
    for j, stats in enumerate(done):  # replay the finished shards' samples without re-encoding them
        replayed: list[AceSample] = []
        prints = stats.get("fingerprints") if extend else None
        for n, expected in enumerate(stats["keys"]):
            sample = next(it, None)
            key = sanitize_key(sample.key) if sample is not None else None
            same = key == expected and (prints is None or sample_fingerprint(sample, cfg) == prints[n])
            if not same:
                if not extend:
                    raise ShardInputChanged(
                        f"{out_uri}: {stats['shard']} holds key {expected!r} but the input now gives {key!r}; "
                        f"the input changed since the interrupted write: remove {out_uri} or write a new shard set")
                break
            replayed.append(sample)
        else:
            short = stats["samples"] < cfg.maxcount and stats["bytes"] < cfg.maxsize
            if not (extend and short and j == len(done) - 1):
                seen_keys.update(stats["keys"])
                if progress:
                    progress(stats["samples"])
                continue
            sample = next(it, None)  # a short last shard: reopened only when more samples follow
            if sample is None:
                seen_keys.update(stats["keys"])
                if progress:
                    progress(stats["samples"])
                break
        # rewrite from shard j: its replayed samples, the one that differed, then the rest
        _drop_from(out_uri, cfg.prefix, j)
        done = done[:j]
        it = itertools.chain(replayed, [] if sample is None else [sample], it)
        break

    writer = _Writer(out_uri, cfg, start=len(done))
    try:
        for sample in it:
            raw = encode_sample(one_extension(sample, cfg))
            if raw["__key__"] in seen_keys:
                raise ValueError(f"duplicate sample key {raw['__key__']!r} (from {sample.key!r}) in {out_uri}")
            seen_keys.add(raw["__key__"])
            writer.write(raw, sample.task, sample_fingerprint(sample, cfg))
            if progress:
                progress(1)
    except BaseException:
        writer.close(aborted=True)
        raise
    writer.close()

    all_stats = done + writer.finished
    fields = _check_fields((f for s in all_stats for f in (s["fields"] if "fields" in s else
                                                            _tar_fields(out_uri, s["shard"]))), out_uri)
    rows = [ShardManifestRow(**{k: s[k] for k in ("shard", "samples", "bytes", "sha256", "counts_by_task")})
            for s in all_stats]
    storage.atomic_write_parquet(storage.join(out_uri, MANIFEST), to_table(rows, ShardManifestRow))
    totals: Counter[str] = Counter()
    for r in rows:
        totals.update(r.counts_by_task)
    report = ShardSetReport(out_uri, len(rows), sum(r.samples for r in rows), sum(r.bytes for r in rows),
                            dict(sorted(totals.items())), resumed_shards=len(done))
    write_card(out_uri, fields, report.counts_by_task, report.samples)
    storage.write_marker(out_uri, {"shards": report.shards, "samples": report.samples, "bytes": report.bytes,
                                   "counts_by_task": report.counts_by_task, "config": cfg.model_dump(),
                                   "kept_shards": len(done), "fields": fields,
                                   **(marker_extra() if marker_extra else {})})
    return report


def read_manifest(uri: str) -> list[ShardManifestRow]:
    if storage.read_marker(uri) is None:
        raise FileNotFoundError(f"{uri} is not a complete shard set (no {storage.MARKER})")
    return from_table(storage.read_parquet(storage.join(uri, MANIFEST)), ShardManifestRow)  # type: ignore


def shard_uris(uri: str) -> list[str]:
    return [storage.join(uri, row.shard) for row in read_manifest(uri)]


def manifest_digest(uri: str) -> str:
    """The sha256 of a complete shard set's manifest rows (shard names, sample and byte counts, each tar's sha256):
    the same shards give the same digest wherever the shard set lies and whichever pyarrow wrote the manifest."""
    rows = [row.model_dump(mode="json") for row in read_manifest(uri)]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
