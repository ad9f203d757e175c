"""What the synthesis stages share: their items (catalog slices), part directories, records and counts.

    <root>/synth/<kind>/part-NNNNN-<digest>/   one item: a parquet table + its marker (counts)
    <root>/synth/<kind>/_SUCCESS.json         the merged counts and the part list; written last

An item reads only its own catalog rows (`synthesis.partition_size` of them, cut within each ingest
generation) and holds one image at a time besides the encoded records it writes. A part's directory is
named by what it reads and the stage's settings, so new catalog images add parts, a changed setting
makes new ones, and finished parts are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from abc import abstractmethod
from collections import Counter
from typing import Any, ClassVar, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from mining.image.decode import RejectedImage, decode_image, encode_image
from schemas.config import RunConfig
from schemas.layout import SynthFiles
from schemas.records import AceSample, ConditionUnit, Generator, ImageRecord, Lineage, Role
from store import storage
from runtime.stage import Stage, StageReport

RECORDS = SynthFiles.RECORDS
# one synthesized pair: edit (+ mask) -> target; object pairs also give the reverse (addition)
RECORD_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("kind", pa.string()), ("source_id", pa.string()),
    ("edit_png", pa.binary()), ("target_png", pa.binary()), ("mask_png", pa.binary()),
    ("object_png", pa.binary()),  # object records: the object's own (undilated) mask, for the layer tasks
    ("instructions", pa.string()),  # json {task: instruction}
    ("generators", pa.string()),  # json [[name, version], ...]
    ("scores", pa.string()),  # json {name: value}
    ("labels", pa.string()),  # json {what: name} a model gave (object_name), or null
])
FILTER_GENERATOR = Generator(name="ace-b52-mask-filters", version="1")
MIN_WORK_SIDE = 16  # images whose shorter side is below this at the working size are skipped (too_thin)
_PART = re.compile(r"part-\d{5}-[0-9a-f]{8}")


def synth_ranges(cfg: RunConfig) -> list[tuple[int, int]]:
    """Catalog row ranges of the items: cut within each ingest generation, up to `synthesis.max_images`."""
    from stages.corpus.embed import partition_ranges
    from stages.corpus.ingest import catalog_generations

    cap = cfg.synthesis.max_images
    out = []
    for lo, hi in partition_ranges(catalog_generations(cfg.root), cfg.synthesis.partition_size):
        if cap is not None:
            hi = min(hi, cap)
        if lo < hi:
            out.append((lo, hi))
    return out


def selected(recs: list[ImageRecord], cfg: RunConfig) -> list[ImageRecord]:
    """The records `synthesis.fraction` chooses, by their id (a content hash: uniform and stable)."""
    f = cfg.synthesis.fraction
    return recs if f >= 1 else [r for r in recs if int(r.id[:8], 16) < f * 16**8]


def load_source(rec: ImageRecord, cfg: RunConfig) -> tuple[np.ndarray | None, str]:
    """(RGB uint8 array with the longer side at most `synthesis.max_side`, '') or (None, reason); an image
    whose shorter side is then under MIN_WORK_SIDE pixels is skipped as `too_thin`."""
    from store.sources import read_uri

    try:
        im = decode_image(read_uri(rec.uri), max_pixels=cfg.ingest.max_pixels, min_side=1).image
    except RejectedImage as e:
        return None, e.reason.value
    except OSError:
        return None, "read_error"
    side = cfg.synthesis.max_side
    if max(im.size) > side:
        f = side / max(im.size)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.BOX)
    if min(im.size) < MIN_WORK_SIDE:  # a strip: no model or map is meaningful on it
        return None, "too_thin"
    return np.asarray(im.convert("RGB")), ""


def png(a: np.ndarray) -> bytes:
    return encode_image(Image.fromarray(a), "png")


def unpng(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def digest(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def add_counts(total: dict, counts: dict) -> dict:
    """Sum nested dicts of ints."""
    for k, v in counts.items():
        if isinstance(v, dict):
            add_counts(total.setdefault(k, {}), v)
        elif isinstance(v, (int, float)):
            total[k] = total.get(k, 0) + v
    return total


RECORD_GROUP_ROWS = 16  # records (with their images) per row group: a report of a part's first records reads one group


def write_records(part: str, rows: list[dict], counts: dict, meta: dict[str, str] | None = None) -> None:
    table = pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
    if meta:
        table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    storage.atomic_write_parquet(storage.join(part, RECORDS), table, row_group_rows=RECORD_GROUP_ROWS)
    storage.write_marker(part, {"counts": counts})


def iter_part_records(part: str):
    """The records of one finished part, in batches (one row group in memory)."""
    for batch in storage.parquet_file(storage.join(part, RECORDS)).iter_batches(batch_size=32):
        yield from batch.to_pylist()


def iter_records(stage_dir: str, columns: list[str] | None = None):
    """The records of a finished synthesis stage, part after part, in batches (one row group in memory);
    only `columns` when given (the images are the bulk of a record)."""
    marker = storage.read_marker(stage_dir)
    if marker is None:
        raise FileNotFoundError(f"no complete synthesis under {stage_dir}")
    for name in marker["parts"]:
        f = storage.parquet_file(storage.join(stage_dir, name, RECORDS))
        for batch in f.iter_batches(batch_size=32, columns=columns):
            yield from batch.to_pylist()


def on_white(source_png: bytes, object_png: bytes) -> bytes:
    """The object's pixels on a white canvas of the source's size."""
    src, obj = unpng(source_png), unpng(object_png) > 0
    out = np.full_like(src, 255)
    out[obj] = src[obj]
    return png(out)


def record_samples(rec: dict, tasks: list[str]) -> Iterator[AceSample]:
    """The AceSamples one synthesis record gives for `tasks`. An object record (edit = source, target =
    object removed, mask = the dilated object, object = its own mask) gives: object_removal; object_addition
    (the reverse); layer_decouple (source -> the object on white, the mask over everything but the object);
    layer_fusion (background with the mask + the object on white as a reference -> the source);
    inpainting_text_guided, for a named object only (the source with the mask blanked -> the source). Text
    records (removals) give text_removal and text_addition (the reverse); repaint records their one task."""
    instructions = json.loads(rec["instructions"])
    lineage = Lineage(source_ids=[rec["source_id"]],
                      generators=[Generator(name=n, version=v) for n, v in json.loads(rec["generators"])],
                      scores=json.loads(rec["scores"]), labels=json.loads(rec.get("labels") or "{}"))
    subject = None
    for task in tasks:
        if task not in instructions:
            continue
        units = [ConditionUnit(role=Role.EDIT, image=rec["edit_png"], mask=rec["mask_png"])]
        target = rec["target_png"]
        if task in ("object_addition", "text_addition"):  # the exact reverse of the stored removal
            units, target = [ConditionUnit(role=Role.EDIT, image=rec["target_png"], mask=rec["mask_png"])], \
                rec["edit_png"]
        elif task == "inpainting_text_guided":  # the named object's region blanked -> the source
            src, m = unpng(rec["edit_png"]), unpng(rec["mask_png"]) > 0
            units = [ConditionUnit(role=Role.EDIT, image=png(np.where(m[..., None], 0, src).astype(np.uint8)),
                                   mask=rec["mask_png"])]
            target = rec["edit_png"]
        elif task in ("layer_decouple", "layer_fusion"):
            subject = subject or on_white(rec["edit_png"], rec["object_png"])
            if task == "layer_decouple":
                background = png(np.where(unpng(rec["object_png"]) > 0, 0, 255).astype(np.uint8))
                units, target = [ConditionUnit(role=Role.EDIT, image=rec["edit_png"], mask=background)], subject
            else:
                units = [ConditionUnit(role=Role.EDIT, image=rec["target_png"], mask=rec["mask_png"]),
                         ConditionUnit(role=Role.REFERENCE, image=subject)]
                target = rec["edit_png"]
        yield AceSample(key=f"{task}-{rec['sample_id']}", task=task, instruction=instructions[task], units=units,
                        target=ConditionUnit(role=Role.TARGET, image=target), lineage=lineage)


class PartStage(Stage):
    """A synthesis stage whose items are parts under <root>/synth/<kind>/."""

    kind: ClassVar[str]
    table: ClassVar[str] = RECORDS  # the file a part holds beside its marker
    item_name = "part"

    @property
    def out(self) -> str:
        return self.layout.synth(self.kind)

    @abstractmethod
    def item_key(self, k: int) -> Any:
        """What item k reads (its catalog ids, or the upstream part): part of its directory's name."""

    @abstractmethod
    def reconcile(self, counts: dict) -> None:
        """Raise when the merged counts do not add up."""

    def samples(self, rec: dict, tasks: list[str]) -> Iterator[AceSample]:
        return record_samples(rec, tasks)

    def _ranges(self) -> list[tuple[int, int]]:
        if getattr(self, "_range_cache", None) is None:
            self._range_cache = synth_ranges(self.cfg)
        return self._range_cache

    def catalog_records(self, k: int) -> list[ImageRecord]:
        """The catalog records of item k's range that the run's selection keeps."""
        from stages.corpus.ingest import catalog_slice

        lo, hi = self._ranges()[k]
        return selected(catalog_slice(self.cfg.root, lo, hi), self.cfg)

    def catalog_key(self, k: int) -> str:
        from stages.corpus.ingest import catalog_ids

        lo, hi = self._ranges()[k]
        return digest(catalog_ids(self.cfg.root, lo, hi), 16)

    def parts(self) -> list[str]:
        if getattr(self, "_part_cache", None) is None:
            base = self.settings()
            self._part_cache = [storage.join(self.out, f"part-{k:05d}-{digest([base, self.item_key(k)])}")
                                for k in range(len(self._ranges()))]
        return self._part_cache

    def record_parts(self) -> list[str]:
        return self.parts()

    def plan(self) -> int:
        return len(self.parts())

    def item_outputs(self, k: int) -> list[str]:
        return [self.layout.marker(self.parts()[k])]

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def finalize(self, n: int) -> StageReport:
        parts = self.parts()
        if len(parts) != n:
            raise RuntimeError(f"{self.label}: {n} items ran but the catalog now gives {len(parts)} parts")
        total: dict = {}
        for p in parts:
            m = storage.read_marker(p)
            if m is None:
                raise RuntimeError(f"{self.label}: part {p} is not complete: run its item first")
            self.reconcile(m["counts"])
            add_counts(total, m["counts"])
        self.reconcile(total)
        names = [p.rsplit("/", 1)[-1] for p in parts]
        # "units": the stored name of the item count (markers are part of downstream stage versions)
        storage.write_marker(self.out, {"counts": total, "parts": names, "units": n})
        self._remove_old_parts(set(names))
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def _remove_old_parts(self, keep: set[str]) -> None:
        """Parts of earlier settings or catalogs (this stage wrote them): removed once merged."""
        fs, path = storage.fs_path(self.out)
        for p in fs.ls(path, detail=False) if fs.exists(path) else []:
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if _PART.fullmatch(name) and name not in keep:
                files = [q.rstrip("/").rsplit("/", 1)[-1].split(storage.TMP_TAG)[0] for q in fs.ls(p, detail=False)]
                if all(f in (self.table, storage.MARKER) for f in files):
                    fs.rm(p, recursive=True)

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        return None if m is None else StageReport(stage=self.label, items=m["units"], outputs=[self.out],
                                                  counts=m["counts"])


def check_sum(label: str, whole: int, parts: dict[str, int] | int, what: str) -> None:
    got = parts if isinstance(parts, int) else sum(parts.values())
    if whole != got:
        raise RuntimeError(f"{label}: {what} do not reconcile: {whole} in, {got} accounted for ({parts})")


def count_reasons(c: Counter) -> dict[str, int]:
    return dict(sorted(c.items()))
