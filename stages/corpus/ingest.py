"""Ingest: list a source, decode every image in parallel, quarantine what fails, drop exact duplicates.

Writes <root>/catalog/images.parquet, duplicates.parquet, quarantine/quarantine.parquet and, last,
the completion marker with the counts. Counts reconcile: seen = accepted + duplicates + quarantined.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from schemas.arrow import IMAGE_RECORD_SCHEMA, QUARANTINE_SCHEMA, from_table, to_table
from schemas.config import IngestConfig
from schemas.records import ImageRecord, QuarantineRecord
from store import storage
from stages.corpus.ingest_dedup import (Held, generation_bounds, merge_catalog, plan_buckets, run_units,
                                        sorted_by_uri, write_hashes, write_part)
from stages.corpus.ingest_chunks import (UNREADABLE_NAMES, Skips, examine, image_extensions,  # noqa: F401
                                         process_chunk, run_chunks)
from schemas.layout import CatalogFiles, RunLayout
from store.sources import Chunk, chunks, expand_source
from runtime.stage import ItemReport, Resources, Stage, StageReport


@dataclass
class IngestReport:
    catalog_uri: str
    seen: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    skipped_existing: bool = False
    skipped: dict[str, int] = field(default_factory=dict)  # listed but never read, by reason (not in `seen`)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def reconciles(self) -> bool:
        return self.seen == self.accepted + self.duplicates + self.quarantined_total

    def to_dict(self) -> dict:
        return {"seen": self.seen, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": dict(sorted(self.quarantined.items())), "catalog_uri": self.catalog_uri,
                "skipped": dict(sorted(self.skipped.items()))}

    @classmethod
    def from_counts(cls, counts: dict, catalog_uri: str = "") -> "IngestReport":
        """The report of `to_dict`'s counts (a stage summary, a catalog marker)."""
        return cls(counts.get("catalog_uri", catalog_uri), counts["seen"], counts["accepted"], counts["duplicates"],
                   dict(counts.get("quarantined", {})), skipped=dict(counts.get("skipped", {})))

    def reconciliation(self) -> str:
        """The one line that says whether the counts add up."""
        status = "reconciled" if self.reconciles else "DO NOT RECONCILE"
        return (f"seen {self.seen} = accepted {self.accepted} + duplicates {self.duplicates} "
                f"+ quarantined {self.quarantined_total}: {status}")


_HOW_NOT_WHAT = {"workers", "chunk_size", "partition_files", "dedup_buckets"}  # how ingest runs, not what it makes


_LATER_FIELDS = ("follow_symlinks_outside", "dedup_buckets")  # added since: left out at their default (old hashes hold)


def config_hash(cfg: IngestConfig) -> str:
    """The whole config's hash (as schemas.config.config_hash), fields added later left out at their default."""
    late = {k for k in _LATER_FIELDS if getattr(cfg, k) == IngestConfig.model_fields[k].default}
    return hashlib.sha256(cfg.model_dump_json(exclude=late).encode()).hexdigest()[:16]


def ingest_hash(cfg: IngestConfig) -> str:
    """The hash of the settings that decide a catalog's content: another worker count or partition size
    reuses the catalog."""
    return config_hash(cfg.model_copy(update={k: IngestConfig.model_fields[k].default for k in _HOW_NOT_WHAT}))


_OLD_DEFAULT_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]  # before Pillow's list


def _same_config(recorded: str | None, cfg: IngestConfig) -> bool:
    """Whether a catalog's recorded settings hash is this config's: today's hash, or one a catalog made by an
    earlier version recorded (the whole config; the fixed extension list that was the default)."""
    forms = [cfg]
    if cfg.extensions is None:
        forms.append(cfg.model_copy(update={"extensions": _OLD_DEFAULT_EXTENSIONS}))
    return recorded in {h for c in forms for h in (ingest_hash(c), config_hash(c))}


def _fingerprint(source: str, cfg: IngestConfig) -> dict:
    return {"source": source, "config": ingest_hash(cfg)}


def existing_catalog(source: str, root: str, cfg: IngestConfig) -> IngestReport | None:
    """The report of a complete catalog of this source and config (whatever the source holds now); None
    when there is none; an error when the catalog there is of another source or config."""
    cat = RunLayout(root).catalog
    marker = storage.read_marker(cat)
    if marker is None:
        return None
    fp = marker.get("fingerprint") or {}
    if fp.get("source") != source or not _same_config(fp.get("config"), cfg):
        raise RuntimeError(f"{cat} already holds a catalog of {marker.get('fingerprint')}; "
                           f"use another root or force=True to replace it")
    report = IngestReport.from_counts(marker["counts"], cat)
    report.catalog_uri, report.skipped_existing = cat, True
    return report


def existing_partitions(root: str) -> int:
    return len(_plan(root)["partitions"])


_PART_FILE = re.compile(CatalogFiles.PART.pattern + "(" + re.escape(storage.TMP_TAG) + r"\w+)?")
_DEDUP_FILE = re.compile(CatalogFiles.DEDUP.pattern + "(" + re.escape(storage.TMP_TAG) + r"\w+)?")


def _remove_partitions(root: str) -> None:
    """Delete the partition and dedup files ingest wrote (and their temporary names), nothing else there."""
    cat = CatalogFiles(RunLayout(root).catalog)
    for folder, names in ((cat.parts_dir, _PART_FILE), (cat.dedup_dir, _DEDUP_FILE)):
        fs, path = storage.fs_path(folder)
        if fs.exists(path):
            for p in fs.ls(path, detail=False):
                if names.fullmatch(p.rsplit("/", 1)[-1]):
                    fs.rm(p)


def _remove_catalog(root: str) -> None:
    """Delete a catalog ingest wrote: its files and partitions, marker first; nothing else in the folder."""
    lay = RunLayout(root)
    cat = CatalogFiles(lay.catalog)
    for uri in (lay.marker(lay.catalog), cat.images, cat.duplicates, cat.quarantine, cat.plan):
        fs, path = storage.fs_path(uri)
        if fs.exists(path):
            fs.rm(path)
    _remove_partitions(root)


def _planned_uris(plan: dict) -> set[str]:
    return {u for part in plan["partitions"] for _, uris in part for u in uris}


def plan_ingest(source: str, root: str, cfg: IngestConfig, force: bool = False) -> int:
    """List the source and cut what is new into partitions (the work items); returns the number of
    partitions. The plan (<root>/catalog/plan.json) is append-only: a source that gained files gets a new
    generation of partitions after the existing ones, which keep their numbers and their outputs."""
    if force:
        _remove_catalog(root)  # marker or not (an interrupted run may have removed it): nothing is reused
    listing_skips: Counter = Counter()
    names: list[str] = []  # not valid UTF-8: quarantined unread, by their printable names
    files, tars = expand_source(source, image_extensions(cfg), listing_skips, names)
    per = max(1, cfg.partition_files // cfg.chunk_size)
    fs, plan_path = storage.fs_path(RunLayout(root).ingest_plan)
    old = _plan(root) if fs.exists(plan_path) else None
    if old is not None and (old["source"] != source or not _same_config(old["config"], cfg)):
        _remove_partitions(root)  # partitions of another source or config must not be reused
        old = None
    if old is not None:
        known = _planned_uris(old)
        files, tars = [f for f in files if f not in known], [t for t in tars if t not in known]
        names = [n for n in names if n not in known]
        if not files and not tars and not names:
            if old.get("skipped", {}) != dict(listing_skips):  # only unreadable files came: count them
                storage.atomic_write_bytes(RunLayout(root).ingest_plan,
                                           json.dumps({**old, "skipped": dict(listing_skips)}).encode())
            return len(old["partitions"])
    cut = chunks(files, tars, cfg.chunk_size) + ([Chunk(UNREADABLE_NAMES, tuple(names))] if names else [])
    new_parts = [[[c.kind, list(c.uris)] for c in cut[i : i + per]] for i in range(0, len(cut), per)]
    partitions = (old["partitions"] if old else []) + new_parts
    plan = {"source": source, "config": old["config"] if old else ingest_hash(cfg), "skipped": dict(listing_skips),
            "dedup_buckets": plan_buckets(old) if old else cfg.dedup_buckets,
            "inputs": (old["inputs"] if old else 0) + len(files) + len(tars) + len(names),
            "generations": (old["generations"] if old else []) + [len(partitions)],
            "partitions": partitions}
    storage.atomic_write_bytes(RunLayout(root).ingest_plan, json.dumps(plan).encode())
    return len(partitions)


def _plan(root: str) -> dict:
    fs, path = storage.fs_path(RunLayout(root).ingest_plan)
    with fs.open(path, "rb") as f:
        plan = json.loads(f.read())
    plan.setdefault("generations", [len(plan["partitions"])])
    return plan


def new_inputs(source: str, root: str, cfg: IngestConfig) -> int:
    """Inputs the source holds now that the catalog's plan has not seen (0 without a plan)."""
    fs, path = storage.fs_path(RunLayout(root).ingest_plan)
    if not fs.exists(path):
        return 0
    known = _planned_uris(_plan(root))
    names: list[str] = []
    files, tars = expand_source(source, image_extensions(cfg), None, names)
    return sum(1 for u in (*files, *tars, *names) if u not in known)


def ingest_partition(root: str, k: int, cfg: IngestConfig, progress: Callable[[int], None] | None = None) -> int:
    """One work item: decode partition k's inputs (in parallel processes), write its records and its
    quarantine, each sorted by URI, and its ids by hash bucket. Skipped when its files exist; returns the
    number of inputs seen."""
    img_uri, bad_uri, hash_uri = (RunLayout(root).ingest_part(k, w) for w in ("images", "quarantine", "hashes"))
    if storage.exists(img_uri) and storage.exists(bad_uri) and storage.exists(hash_uri):
        return -1
    plan = _plan(root)
    if storage.exists(img_uri) and storage.exists(bad_uri):  # decoded by a version that wrote no hashes
        imgs = sorted_by_uri(storage.read_parquet(img_uri))
        write_part(img_uri, imgs)
        write_part(bad_uri, sorted_by_uri(storage.read_parquet(bad_uri)))
        write_hashes(hash_uri, imgs, plan_buckets(plan))
        return ingest_partition_seen(root, k)
    part = [Chunk(kind, tuple(uris)) for kind, uris in plan["partitions"][k]]
    results = run_chunks(part, cfg, plan["source"], progress)
    skipped: Counter = Counter()
    for r in results:
        if isinstance(r, Skips):
            skipped.update(r.counts)
    bad = sorted_by_uri(to_table([r for r in results if isinstance(r, QuarantineRecord)], QuarantineRecord))
    write_part(bad_uri, bad.replace_schema_metadata(
        {**(bad.schema.metadata or {}), SKIPPED_META: json.dumps(dict(skipped)).encode()}))
    results = [r for r in results if not isinstance(r, Skips)]
    imgs = sorted_by_uri(to_table([r for r in results if isinstance(r, ImageRecord)], ImageRecord))
    write_hashes(hash_uri, imgs, plan_buckets(plan))
    write_part(img_uri, imgs)
    return len(results)


SKIPPED_META = b"aceforge.skipped"  # a quarantine partition's footer: tar members not read, by reason


def partition_skips(root: str, k: int) -> Counter:
    meta = storage.parquet_file(RunLayout(root).ingest_part(k, "quarantine")).schema_arrow.metadata or {}
    return Counter(json.loads(meta.get(SKIPPED_META, b"{}")))


def finalize_ingest(root: str, n_partitions: int, held: Held | None = None, workers: int = 1) -> IngestReport:
    """Run the dedup units, then merge the partitions, generation by generation: within a generation rows
    are in URI order and an exact duplicate (same content hash) of a row kept before it, in this or an
    earlier generation, is recorded in duplicates.parquet. Rows of earlier generations keep their positions
    (embedding partitions are row ranges); a new generation's rows come after them. Counts reconcile, then
    the marker. Memory: one dedup bucket per process (`workers` of them), then one row group per merged
    stream (`held` records the most rows held at once)."""
    cat = RunLayout(root).catalog
    plan = _plan(root)
    if n_partitions != len(plan["partitions"]):
        raise RuntimeError(f"{cat}: asked to merge {n_partitions} partitions, the plan has {len(plan['partitions'])}")
    buckets = plan_buckets(plan)
    bounds = generation_bounds(plan)
    for g in range(len(bounds)):  # a generation's units read the buckets earlier generations kept
        run_units(root, plan, g, workers)
    seen, accepted, duplicates, quarantined, generations = merge_catalog(root, bounds, buckets, held)
    skipped: Counter = Counter(plan.get("skipped", {}))
    for k in range(n_partitions):
        skipped.update(partition_skips(root, k))
    report = IngestReport(cat, seen=seen, accepted=accepted, duplicates=duplicates,
                          quarantined=dict(sorted(quarantined.items())), skipped=dict(skipped))
    inputs_seen = sum(ingest_partition_seen(root, k) for k in range(n_partitions))
    if not report.reconciles or inputs_seen != seen:
        raise RuntimeError(f"ingest counts do not reconcile: {report.to_dict()}, partitions hold {inputs_seen}")
    storage.write_marker(cat, {"fingerprint": {"source": plan["source"], "config": plan["config"]},
                               "counts": report.to_dict(), "partitions": n_partitions, "generations": generations})
    return report


def ingest_partition_seen(root: str, k: int) -> int:
    """Records in partition k's two files (from their footers)."""
    return sum(storage.parquet_file(RunLayout(root).ingest_part(k, w)).metadata.num_rows for w in ("images", "quarantine"))


def catalog_generations(root: str) -> list[dict]:
    """[{partitions, rows}] cumulative per ingest generation, from the catalog marker."""
    marker = storage.read_marker(RunLayout(root).catalog)
    if marker is None:
        raise FileNotFoundError(f"no complete catalog under {RunLayout(root).catalog}: run `aceforge ingest` first")
    return marker.get("generations") or [{"partitions": marker.get("partitions", 0),
                                          "rows": marker["counts"]["accepted"]}]


def ingest(source: str, root: str, cfg: IngestConfig | None = None, *, force: bool = False,
           progress_total: Callable[[int], None] | None = None,
           progress: Callable[[int], None] | None = None) -> IngestReport:
    """Ingest `source` into `<root>/catalog`, every partition in this process. A complete catalog of the
    same source and config is a no-op; new files in the source are ingested as a new generation."""
    cfg = cfg or IngestConfig()
    done = None if force else existing_catalog(source, root, cfg)
    if done is not None and new_inputs(source, root, cfg) == 0:
        return done
    if done is not None:
        fs, path = storage.fs_path(RunLayout.marker(RunLayout(root).catalog))
        fs.rm(path)  # the catalog grows: merged again once the new partitions exist
    n = plan_ingest(source, root, cfg, force)
    if progress_total:
        progress_total(_plan(root)["inputs"])
    for k in range(n):
        ingest_partition(root, k, cfg, progress)
    report = finalize_ingest(root, n, workers=cfg.resolved_workers())
    from schemas.config import RunConfig

    IngestStage(RunConfig(root=root, ingest=cfg), source=source).stamp(RunLayout(root).catalog)  # as the stage would
    return report


def reconciliation_line(counts: dict | None, root: str) -> str | None:
    """The reconciliation line of a run's ingest counts, else of the catalog under `root`; None without one."""
    if counts is None:
        counts = (storage.read_marker(RunLayout(root).catalog) or {}).get("counts")
    return IngestReport.from_counts(counts, RunLayout(root).catalog).reconciliation() if counts else None


def load_catalog(root: str) -> list[ImageRecord]:
    cat = RunLayout(root).catalog
    if storage.read_marker(cat) is None:
        raise FileNotFoundError(f"no complete catalog under {cat}: run `aceforge ingest` first")
    table = storage.read_parquet(CatalogFiles(cat).images)
    if table.schema.names != IMAGE_RECORD_SCHEMA.names:
        raise ValueError(f"{CatalogFiles(cat).images} has columns {table.schema.names}, expected {IMAGE_RECORD_SCHEMA.names}")
    return from_table(table, ImageRecord)  # type: ignore[return-value]


def _catalog_file(root: str):
    cat = RunLayout(root).catalog
    if storage.read_marker(cat) is None:
        raise FileNotFoundError(f"no complete catalog under {cat}: run `aceforge ingest` first")
    return storage.parquet_file(CatalogFiles(cat).images)


def catalog_size(root: str) -> int:
    """Rows of the catalog, from the parquet footer (nothing else is read)."""
    return _catalog_file(root).metadata.num_rows


def catalog_slice(root: str, start: int, stop: int) -> list[ImageRecord]:
    """Rows [start, stop) of the catalog, reading only the row groups that hold them: memory and I/O are
    bounded by the slice, not the catalog."""
    return from_table(storage.read_row_range(_catalog_file(root), start, stop), ImageRecord)  # type: ignore


def catalog_ids(root: str, start: int, stop: int) -> list[str]:
    """The ids of rows [start, stop) (only that column of those row groups is read)."""
    return storage.read_row_range(_catalog_file(root), start, stop, ["id"]).column("id").to_pylist()


def catalog_uris(root: str, ids: set[str], batch_rows: int = 65536) -> dict[str, str]:
    """id -> URI for `ids`, reading two columns of the catalog: memory is bounded by the ids asked for."""
    import pyarrow.compute as pc

    want = pa.array(sorted(ids), pa.string())
    out: dict[str, str] = {}
    for batch in _catalog_file(root).iter_batches(batch_size=batch_rows, columns=["id", "uri"]):
        hit = batch.filter(pc.is_in(batch.column("id"), value_set=want))
        out.update(zip(hit.column("id").to_pylist(), hit.column("uri").to_pylist()))
    if len(out) != len(ids):
        missing = sorted(ids - out.keys())
        raise KeyError(f"{len(missing)} ids are not in the catalog under {RunLayout(root).catalog}, e.g. {missing[0]}")
    return out


def load_quarantine(root: str) -> list[QuarantineRecord]:
    table = storage.read_parquet(CatalogFiles(RunLayout(root).catalog).quarantine)
    assert table.schema.names == QUARANTINE_SCHEMA.names
    return from_table(table, QuarantineRecord)  # type: ignore[return-value]


class IngestStage(Stage):
    """Ingest `source` into <root>/catalog: one item per partition of `ingest.partition_files` inputs.
    A re-run over a source that gained files plans and decodes only the new ones (a new generation)."""

    name = "ingest"
    item_name = "partition"
    resources = Resources(cpus=1.0)
    always, scope, key, config_section, ui_report = True, "run", "ingest", "ingest", "ingest"

    @property
    def source(self) -> str:
        return self.params["source"]

    def settings(self) -> dict:
        return _fingerprint(self.source, self.cfg.ingest)

    def plan(self) -> int:
        return plan_ingest(self.source, self.cfg.root, self.cfg.ingest)

    def plan_outputs(self) -> list[str]:
        return []  # planning lists the source: never served from Prefect's cache

    def item_outputs(self, k: int) -> list[str]:
        return [self.layout.ingest_part(k, w) for w in ("images", "quarantine", "hashes")]

    def run(self, k: int) -> ItemReport:
        seen = ingest_partition(self.cfg.root, k, self.cfg.ingest)
        return ItemReport(stage=self.label, item=k, counts={"seen": seen})

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.layout.catalog)]

    def finalize(self, n: int) -> StageReport:
        counts = finalize_ingest(self.cfg.root, n, workers=self.cfg.ingest.resolved_workers()).to_dict()
        self.stamp(self.layout.catalog)
        return StageReport(stage=self.label, items=n, outputs=[self.layout.catalog], counts=counts)

    def report(self) -> StageReport | None:
        done = existing_catalog(self.source, self.cfg.root, self.cfg.ingest)  # another source's: an error
        if done is None or self.current(storage.read_marker(self.layout.catalog)) is None:
            return None
        if new_inputs(self.source, self.cfg.root, self.cfg.ingest):
            return None  # the source gained files: a new generation
        return StageReport(stage=self.label, items=existing_partitions(self.cfg.root), outputs=[self.layout.catalog],
                           counts=done.to_dict())
