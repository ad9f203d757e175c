"""Ingest: list a source, decode every image in parallel, quarantine what fails, drop exact duplicates.

Writes <root>/catalog/images.parquet, duplicates.parquet, quarantine/quarantine.parquet and, last,
the completion marker with the counts. Counts reconcile: seen = accepted + duplicates + quarantined.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import tarfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from mining.decode import RejectedImage, decode_image
from schemas.arrow import IMAGE_RECORD_SCHEMA, QUARANTINE_SCHEMA, from_table, to_table
from schemas.config import IngestConfig, config_hash
from schemas.records import ImageRecord, QuarantineReason, QuarantineRecord
from tasks import storage
from tasks.sources import WorkUnit, expand_source, iter_tar, read_uri, work_units

Result = ImageRecord | QuarantineRecord


@dataclass
class IngestReport:
    catalog_uri: str
    seen: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    skipped_existing: bool = False

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def reconciles(self) -> bool:
        return self.seen == self.accepted + self.duplicates + self.quarantined_total

    def to_dict(self) -> dict:
        return {"seen": self.seen, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": dict(sorted(self.quarantined.items())), "catalog_uri": self.catalog_uri}


def examine(uri: str, data: bytes, cfg: IngestConfig, source: str) -> Result:
    """Decide one input: an ImageRecord or a QuarantineRecord with its reason."""
    try:
        dec = decode_image(data, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
    except RejectedImage as e:
        return QuarantineRecord(uri=uri, reason=e.reason, detail=e.detail, source=source)
    return ImageRecord(id=hashlib.sha256(data).hexdigest(), uri=uri, width=dec.width, height=dec.height,
                       format=dec.format, mode=dec.mode, source=source, nbytes=len(data))


def _quarantine(uri: str, reason: QuarantineReason, detail: str, source: str) -> QuarantineRecord:
    return QuarantineRecord(uri=uri, reason=reason, detail=detail, source=source)


def process_unit(unit: WorkUnit, cfg: IngestConfig, source: str) -> list[Result]:
    out: list[Result] = []
    if unit.kind == "files":
        for uri in unit.uris:
            try:
                data = read_uri(uri, max_bytes=cfg.max_bytes)
            except ValueError as e:
                out.append(_quarantine(uri, QuarantineReason.TOO_MANY_BYTES, str(e), source))
                continue
            except OSError as e:
                out.append(_quarantine(uri, QuarantineReason.READ_ERROR, f"{type(e).__name__}: {e}", source))
                continue
            out.append(examine(uri, data, cfg, source))
        return out
    (tar_uri,) = unit.uris
    last = "<start>"
    try:
        for member_uri, data, size in iter_tar(tar_uri, cfg.extensions, cfg.max_bytes):
            last = member_uri
            if data is None:
                out.append(_quarantine(member_uri, QuarantineReason.TOO_MANY_BYTES,
                                       f"{size} bytes > cap {cfg.max_bytes}", source))
            else:
                out.append(examine(member_uri, data, cfg, source))
    except (tarfile.TarError, EOFError, OSError) as e:
        out.append(_quarantine(f"{tar_uri}#<after {last.rsplit('#', 1)[-1]}>", QuarantineReason.BAD_ARCHIVE,
                               f"{type(e).__name__}: {e}", source))
    return out


def _run_units(units: list[WorkUnit], cfg: IngestConfig, source: str,
               progress: Callable[[int], None] | None) -> list[Result]:
    results: list[Result] = []
    workers = min(cfg.resolved_workers(), max(1, len(units)))
    if workers <= 1:
        for u in units:
            results += process_unit(u, cfg, source)
            if progress:
                progress(len(u.uris) if u.kind == "files" else 1)
        return results
    # spawn: the parent may hold threads (progress bars, Ray) that fork would copy mid-state
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(process_unit, u, cfg, source): u for u in units}
        for fut in as_completed(futures):
            u = futures[fut]
            results += fut.result()
            if progress:
                progress(len(u.uris) if u.kind == "files" else 1)
    return results


def catalog_uri(root: str) -> str:
    return storage.join(root, "catalog")


def ingest(source: str, root: str, cfg: IngestConfig | None = None, *, force: bool = False,
           progress_total: Callable[[int], None] | None = None,
           progress: Callable[[int], None] | None = None) -> IngestReport:
    """Ingest `source` into `<root>/catalog`. A complete catalog of the same source and config is a no-op."""
    cfg = cfg or IngestConfig()
    cat = catalog_uri(root)
    fingerprint = {"source": source, "config": config_hash(cfg)}
    marker = storage.read_marker(cat)
    if marker is not None and not force:
        if marker.get("fingerprint") != fingerprint:
            raise RuntimeError(f"{cat} already holds a catalog of {marker.get('fingerprint')}; "
                               f"use another root or force=True to replace it")
        counts = marker["counts"]
        return IngestReport(cat, counts["seen"], counts["accepted"], counts["duplicates"],
                            counts["quarantined"], skipped_existing=True)

    files, tars = expand_source(source, cfg.extensions)
    units = work_units(files, tars, cfg.chunk_size)
    if progress_total:
        progress_total(len(files) + len(tars))
    results = _run_units(units, cfg, source, progress)

    images = sorted((r for r in results if isinstance(r, ImageRecord)), key=lambda r: r.uri)
    bad = sorted((r for r in results if isinstance(r, QuarantineRecord)), key=lambda r: r.uri)
    kept: dict[str, ImageRecord] = {}
    dups: list[tuple[str, str, str]] = []
    for rec in images:
        if rec.id in kept:
            dups.append((rec.uri, rec.id, kept[rec.id].uri))
        else:
            kept[rec.id] = rec
    accepted = sorted(kept.values(), key=lambda r: r.uri)

    report = IngestReport(cat, seen=len(results), accepted=len(accepted), duplicates=len(dups),
                          quarantined=dict(Counter(r.reason.value for r in bad)))
    storage.atomic_write_parquet(storage.join(cat, "images.parquet"), to_table(accepted, ImageRecord))
    storage.atomic_write_parquet(storage.join(cat, "quarantine", "quarantine.parquet"),
                                 to_table(bad, QuarantineRecord))
    dup_table = pa.table({"uri": [d[0] for d in dups], "id": [d[1] for d in dups],
                          "duplicate_of": [d[2] for d in dups]})
    storage.atomic_write_parquet(storage.join(cat, "duplicates.parquet"), dup_table)
    assert report.reconciles, report.to_dict()
    storage.write_marker(cat, {"fingerprint": fingerprint, "counts": report.to_dict()})
    return report


def load_catalog(root: str) -> list[ImageRecord]:
    cat = catalog_uri(root)
    if storage.read_marker(cat) is None:
        raise FileNotFoundError(f"no complete catalog under {cat}: run `aceforge ingest` first")
    table = storage.read_parquet(storage.join(cat, "images.parquet"))
    if table.schema.names != IMAGE_RECORD_SCHEMA.names:
        raise ValueError(f"{cat}/images.parquet has columns {table.schema.names}, expected {IMAGE_RECORD_SCHEMA.names}")
    return from_table(table, ImageRecord)  # type: ignore[return-value]


def load_quarantine(root: str) -> list[QuarantineRecord]:
    table = storage.read_parquet(storage.join(catalog_uri(root), "quarantine", "quarantine.parquet"))
    assert table.schema.names == QUARANTINE_SCHEMA.names
    return from_table(table, QuarantineRecord)  # type: ignore[return-value]
