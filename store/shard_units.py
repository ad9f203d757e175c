"""A shard set written by many units: each unit its own shards, the set's manifest merged at the end.

Unit `u` of a set whose shard prefix is `p` writes <p>-<u>-NNNNNN.tar (+ .stats.json per shard, as
store/shards.py's writer does) and, after its last shard, <p>-<u>.unit.json: its shards' manifest rows,
fields, image extension and what the packer adds (its gate's counts). A unit whose .unit.json exists is
never written again, so the shards of a unit whose name (its input's content) is unchanged keep their
bytes; an interrupted unit is written again whole. Units write in parallel: each touches only its own
names. `finalize_shard_set` then writes manifest.parquet (the units' rows in plan order), the dataset
card and the marker, and removes the files of this prefix that belong to no planned unit (earlier units,
shards of a one-writer set).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, Iterable

from schemas.arrow import to_table
from schemas.config import ShardConfig
from schemas.layout import ShardFiles
from schemas.records import AceSample, ShardManifestRow
from schemas.shard_layout import encode_sample
from store import storage
from store.shards import (MANIFEST, ShardSetReport, _check_fields, _resolve_ext, _Writer, one_extension,
                          sample_fingerprint, write_card)

ROW_KEYS = ("shard", "samples", "bytes", "sha256", "counts_by_task")


def unit_uri(out_uri: str, prefix: str, unit: str) -> str:
    """The file whose presence says unit `unit` is written (its item output)."""
    return storage.join(out_uri, ShardFiles.unit_name(prefix, unit))


def read_unit(out_uri: str, prefix: str, unit: str) -> dict | None:
    uri = unit_uri(out_uri, prefix, unit)
    if not storage.exists(uri):
        return None
    fs, path = storage.fs_path(uri)
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def _own_files(out_uri: str, prefix: str) -> list[tuple[str, str | None]]:
    """(path, unit) of every file this prefix's packers wrote in the folder (unit None: one-writer shards)."""
    fs, path = storage.fs_path(out_uri)
    owned = ShardFiles.owned(prefix)
    out = []
    for p in fs.ls(path, detail=False) if fs.exists(path) else []:
        m = owned.fullmatch(os.path.basename(p))
        if m:
            out.append((p, m["unit"] or m["unit_file"]))
    return out


def write_shard_unit(samples: Iterable[AceSample], out_uri: str, unit: str, cfg: ShardConfig, *,
                     extra: Callable[[], dict] | None = None,
                     before_done: Callable[[list[dict]], None] | None = None) -> tuple[dict, bool]:
    """Write one unit's samples as its own shards; returns (its .unit.json, whether it was written now).
    `extra` is called once the input is exhausted; what it returns joins the unit's file. `before_done` gets the
    finished shards' stats (their keys) before the unit's file is written (the unit's samples table)."""
    done = read_unit(out_uri, cfg.prefix, unit)
    if done is not None:
        return done, False
    fs, path = storage.fs_path(out_uri)
    fs.makedirs(path, exist_ok=True)
    for p, u in _own_files(out_uri, cfg.prefix):  # an interrupted write of this unit: written again whole
        if u == unit:
            fs.rm(p)
    it = iter(samples)
    cfg, it = _resolve_ext(cfg, [], it)
    ucfg = cfg.model_copy(update={"prefix": ShardFiles.unit_prefix(cfg.prefix, unit)})
    writer = _Writer(out_uri, ucfg, start=0)
    seen: set[str] = set()  # the unit's keys (bounded by the unit)
    try:
        for sample in it:
            raw = encode_sample(one_extension(sample, cfg))
            if raw["__key__"] in seen:
                raise ValueError(f"duplicate sample key {raw['__key__']!r} (from {sample.key!r}) in unit {unit}")
            seen.add(raw["__key__"])
            writer.write(raw, sample.task, sample_fingerprint(sample, cfg))
    except BaseException:
        writer.close(aborted=True)
        raise
    writer.close()
    if before_done is not None:
        before_done(writer.finished)
    shards = [{**{k: s[k] for k in ROW_KEYS}, "fields": s["fields"]} for s in writer.finished]
    doc = {"unit": unit, "shards": shards, "samples": sum(s["samples"] for s in shards),
           "image_ext": cfg.image_ext, **(extra() if extra else {})}
    storage.atomic_write_bytes(unit_uri(out_uri, cfg.prefix, unit), json.dumps(doc, sort_keys=True).encode())
    return doc, True


def _drop_thumbs(out_uri: str, prefix: str, planned: set[str]) -> None:
    """Remove the thumbnail folders this prefix's units wrote for units no longer planned."""
    fs, path = storage.fs_path(storage.join(out_uri, ShardFiles.THUMBS))
    if not fs.exists(path):
        return
    mine = {os.path.basename(ShardFiles.thumb_dir(prefix, u)) for u in planned}
    for p in fs.ls(path, detail=False):
        name = os.path.basename(p)
        if name.startswith(f"{prefix}-") and name not in mine:
            fs.rm(p, recursive=True)


def _previous_shards(out_uri: str) -> set[str]:
    """The shard names of the manifest an earlier finalize wrote (empty when none)."""
    uri = storage.join(out_uri, MANIFEST)
    if not storage.exists(uri):
        return set()
    return set(storage.parquet_file(uri).read(columns=["shard"]).column("shard").to_pylist())


def finalize_shard_set(out_uri: str, units: list[str], cfg: ShardConfig,
                       extra: dict | None = None) -> ShardSetReport:
    """Merge the written units (in `units` order) into the set's manifest, card and marker (last); remove
    this prefix's files of units not in `units`. A complete set is left as it is. The marker's `kept_shards`
    counts the shards an earlier manifest listed too."""
    marker = storage.read_marker(out_uri)
    if marker is not None:
        return ShardSetReport(out_uri, marker["shards"], marker["samples"], marker["bytes"],
                              marker["counts_by_task"], skipped_existing=True)
    fs, path = storage.fs_path(out_uri)
    fs.makedirs(path, exist_ok=True)
    rows: list[ShardManifestRow] = []
    fields: list[str] = []
    exts: set[str] = set()
    for u in units:
        doc = read_unit(out_uri, cfg.prefix, u)
        if doc is None:
            raise RuntimeError(f"{out_uri}: unit {u} is not written: run its item first")
        rows += [ShardManifestRow(**{k: s[k] for k in ROW_KEYS}) for s in doc["shards"]]
        fields += [f for s in doc["shards"] for f in s["fields"]]
        if doc["shards"]:
            exts.add(doc["image_ext"])
    planned = set(units)
    for p, u in _own_files(out_uri, cfg.prefix):
        if u not in planned:
            fs.rm(p)
    _drop_thumbs(out_uri, cfg.prefix, planned)
    from store.sample_table import merge

    merge(out_uri, cfg.prefix, units)
    names = _check_fields(fields, out_uri)
    before = _previous_shards(out_uri)
    storage.atomic_write_parquet(storage.join(out_uri, MANIFEST), to_table(rows, ShardManifestRow))
    totals: Counter[str] = Counter()
    for r in rows:
        totals.update(r.counts_by_task)
    kept = sum(r.shard in before for r in rows)
    report = ShardSetReport(out_uri, len(rows), sum(r.samples for r in rows), sum(r.bytes for r in rows),
                            dict(sorted(totals.items())), resumed_shards=kept)
    write_card(out_uri, names, report.counts_by_task, report.samples)
    config = cfg.model_copy(update={"image_ext": exts.pop()}) if len(exts) == 1 else cfg
    storage.write_marker(out_uri, {"shards": report.shards, "samples": report.samples, "bytes": report.bytes,
                                   "counts_by_task": report.counts_by_task, "config": config.model_dump(),
                                   "kept_shards": kept, "fields": names, "units": list(units), **(extra or {})})
    return report
