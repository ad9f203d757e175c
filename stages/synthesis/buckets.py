"""Buckets of vectors across the corpus: the units of a stage that must compare rows of every part.

    <root>/synth/<kind>/quantiser.parquet                    row 0 the mean, then one centroid per bucket; kept
    <root>/synth/<kind>/part-NNNNN-<digest>/buckets.parquet   one source part's rows, one per bucket a row is in

`plan` fits the quantiser (mining/faces/buckets.py: spherical K-means over the unit vectors less their mean,
on up to `fit_sample` rows chosen by id) when there is none, or when the bucket count the rows now ask for
(ceil(rows / `bucket_rows`)) is off from the kept one by more than 2x; otherwise it keeps it, so new rows
move no old row to another bucket. An item is one source part: its rows' unit vectors and carried columns,
one row per bucket a row is in (its home, the nearest centroid, and up to `max_extra` others within `spill`
cosine of it). Memory: one source part. The merged marker lists per bucket its home rows, its members, a
digest of their ids and the parts holding them: a downstream unit per bucket names its part by that digest,
so new rows re-run only the buckets they join. Counts: rows = bucketed (in their home bucket), per part and
merged, and the merged rows equal the source stage's; spilled = extra memberships.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.faces.buckets import QUANTISER, assign, fit_quantiser, n_buckets
from runtime.stage import ItemReport, Resources, StageReport
from schemas.layout import SynthFiles
from stages.synthesis.parts import PartStage, add_counts, check_sum, digest
from store import storage

BUCKETS = SynthFiles.BUCKETS


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class BucketsStage(PartStage):
    """Subclasses name the source stage's directory, its table, the vector column, the columns carried, the
    marker count of its rows, and the bucketing settings."""

    table = BUCKETS
    resources = Resources(cpus=1.0)
    source_table: ClassVar[str]
    vector: ClassVar[str]  # the source's vector column
    carried: ClassVar[tuple[str, ...]]  # the source's columns kept beside the vector (the first: the row id)
    source_count: ClassVar[str]  # the source marker's count of its rows
    stored_unit: ClassVar[bool] = True  # store the unit vectors (else the source's own)

    @property
    @abstractmethod
    def source_dir(self) -> str: ...

    @abstractmethod
    def bucketing(self) -> dict:
        """{"bucket_rows", "fit_sample", "spill", "max_extra"}"""

    def inputs(self) -> list[str]:
        return [self.source_dir]

    def settings(self) -> dict:
        return {"quantiser": list(QUANTISER), **self.bucketing(), "seed": self.cfg.synthesis.seed}

    def _source_marker(self) -> dict:
        m = storage.read_marker(self.source_dir)
        if m is None:
            raise FileNotFoundError(f"no complete source under {self.source_dir}")
        return m

    def source_parts(self) -> list[str]:
        return list(self._source_marker()["parts"])

    def item_key(self, k: int) -> str:
        return self.source_parts()[k]

    def quantiser(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The kept mean, centroids and their digest (a plan writes them first)."""
        if getattr(self, "_quant", None) is None:
            t = storage.read_parquet(SynthFiles(self.out).quantiser)
            c = np.asarray(t.column("centroid").to_pylist(), np.float32).reshape(t.num_rows, -1)
            self._quant = (c[0], c[1:], (t.schema.metadata or {}).get(b"digest", b"").decode())
        return self._quant

    def parts(self) -> list[str]:
        if getattr(self, "_part_cache", None) is None:
            base, q = self.settings(), self.quantiser()[2]
            self._part_cache = [storage.join(self.out, f"part-{k:05d}-{digest([base, name, q])}")
                                for k, name in enumerate(self.source_parts())]
        return self._part_cache

    def plan(self) -> int:
        self._ensure_quantiser()
        return len(self.parts())

    def _ensure_quantiser(self) -> None:
        b, seed = self.bucketing(), self.cfg.synthesis.seed
        uri = SynthFiles(self.out).quantiser
        want = n_buckets(self._source_marker()["counts"][self.source_count], b["bucket_rows"])
        if storage.exists(uri):
            meta = storage.parquet_file(uri).schema_arrow.metadata or {}
            kept = int(meta.get(b"buckets", b"0"))
            if meta.get(b"settings", b"").decode() == digest(self.settings()) and kept and \
                    want / 2 <= kept <= want * 2:
                return
        sample = self._sample(b["fit_sample"]) if want > 1 else np.zeros((0, 1), np.float32)
        mean, c = fit_quantiser(sample, want, seed)
        c = np.concatenate([mean[None], c])
        table = pa.table({"centroid": pa.array(c.tolist(), pa.list_(pa.float32(), c.shape[1]))})
        meta = {b"buckets": str(len(c) - 1).encode(), b"settings": digest(self.settings()).encode(),
                b"digest": digest([c.tobytes().hex()], 16).encode()}
        storage.atomic_write_parquet(uri, table.replace_schema_metadata(meta))
        self._quant = self._part_cache = None

    def _read(self, name: str, columns: list[str]) -> pa.Table:
        return storage.parquet_file(storage.join(self.source_dir, name, self.source_table)).read(columns=columns)

    def _sample(self, size: int) -> np.ndarray:
        """Unit vectors of about `size` rows, chosen by id (a content hash); one source part in memory."""
        total = self._source_marker()["counts"][self.source_count]
        cut = min(1.0, size / max(total, 1)) * 16**8
        out = []
        for name in self.source_parts():
            t = self._read(name, [self.carried[0], self.vector])
            keep = [i for i, s in enumerate(t.column(self.carried[0]).to_pylist()) if int(s[:8], 16) < cut]
            if keep:
                out.append(unit_rows(np.asarray(t.column(self.vector).take(keep).to_pylist(), np.float32)))
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def run(self, k: int) -> ItemReport:
        part, name = self.parts()[k], self.source_parts()[k]
        t = self._read(name, [self.vector, *self.carried])
        n = t.num_rows
        x = unit_rows(np.asarray(t.column(self.vector).to_pylist(), np.float32).reshape(n, -1)) if n else \
            np.zeros((0, 1), np.float32)
        b = self.bucketing()
        mean, cent, _ = self.quantiser()
        home, member = assign(x, mean, cent, b["spill"], b["max_extra"])
        pairs = sorted((v, r) for r, bs in enumerate(member) for v in bs)  # by bucket, then row
        bk = np.asarray([p[0] for p in pairs], np.int32)
        order = np.asarray([p[1] for p in pairs], np.int64)
        ids = t.column(self.carried[0]).to_pylist()
        cols = {"bucket": pa.array(bk, pa.int32()), "home": pa.array(home[order] == bk, pa.bool_()),
                "buckets": pa.array([member[r] for r in order], pa.list_(pa.int32())),
                "row": pa.array(order, pa.int32()),
                self.vector: pa.array(x[order].tolist(), t.schema.field(self.vector).type) if self.stored_unit
                else t.column(self.vector).take(pa.array(order, pa.int64()))}
        cols.update({c: t.column(c).take(pa.array(order, pa.int64())) for c in self.carried})
        table = pa.table(cols)
        buckets = {}
        for v in np.unique(bk).tolist():
            rows = order[bk == v]
            buckets[str(v)] = [len(rows), int(np.count_nonzero(home[rows] == v)),
                               digest([name, [ids[i] for i in rows]], 16)]
        counts = {"rows": n, "bucketed": int(sum(h for _, h, _ in buckets.values())), "spilled": len(order) - n}
        self.reconcile(counts)
        storage.atomic_write_parquet(storage.join(part, BUCKETS), table)
        storage.write_marker(part, {"counts": counts, "buckets": buckets})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c.get("rows", 0), c.get("bucketed", 0), "rows in their home buckets")

    def finalize(self, n: int) -> StageReport:
        parts = self.parts()
        if len(parts) != n:
            raise RuntimeError(f"{self.label}: {n} items ran but the source now gives {len(parts)} parts")
        total: dict = {"rows": 0, "bucketed": 0, "spilled": 0}
        per: dict[int, list] = {}
        for k, p in enumerate(parts):
            m = storage.read_marker(p)
            if m is None:
                raise RuntimeError(f"{self.label}: part {p} is not complete: run its item first")
            self.reconcile(m["counts"])
            add_counts(total, m["counts"])
            for b, (members, homed, d) in m["buckets"].items():
                per.setdefault(int(b), []).append((k, members, homed, d))
        self.reconcile(total)
        check_sum(self.label, self._source_marker()["counts"][self.source_count], total["rows"],
                  "rows of the source stage")
        buckets = [{"bucket": b, "members": sum(e[1] for e in per[b]), "rows": sum(e[2] for e in per[b]),
                    "digest": digest([e[3] for e in per[b]]), "parts": [e[0] for e in per[b]]} for b in sorted(per)]
        names = [p.rsplit("/", 1)[-1] for p in parts]
        total["buckets"] = len(buckets)
        storage.write_marker(self.out, {"counts": total, "parts": names, "units": n,
                                        "source_parts": self.source_parts(), "buckets": buckets})
        self._remove_old_parts(set(names))
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]


def bucket_rows(stage_dir: str, marker: dict, k: int) -> pa.Table:
    """Bucket k's rows (of the merged marker's bucket list), source part after source part: the bucket and
    one buckets part in memory; columns: the buckets table's plus `source_part` (the source part's name)."""
    b = marker["buckets"][k]
    tables = []
    for p in b["parts"]:
        t = storage.read_parquet(storage.join(stage_dir, marker["parts"][p], BUCKETS))
        t = t.filter(pc.equal(t.column("bucket"), b["bucket"]))
        tables.append(t.append_column("source_part", pa.array([marker["source_parts"][p]] * t.num_rows, pa.string())))
    return pa.concat_tables(tables) if tables else pa.table({})
