"""Face buckets: every face of the faces stage in one bucket, the units of the face-pair stage.

    <root>/synth/face_buckets/quantiser.parquet                 the centroids (one row per bucket), kept
    <root>/synth/face_buckets/part-NNNNN-<digest>/buckets.parquet  one faces part's faces, sorted by bucket

`plan` fits the quantiser (mining/faces/buckets.py) when there is none, or when the bucket count the faces
now ask for (ceil(faces / `faces.bucket_faces`)) is off from the kept one by more than 2x, on up to
`faces.fit_sample` faces chosen by id; otherwise it keeps it, so new faces move no old face to another bucket.
An item is one faces part: its faces' unit descriptors, landmarks and image sizes, one row per bucket a face
is in (its home, the nearest centroid, and up to `faces.bucket_max_extra` others within `faces.bucket_spill`
cosine of it: a pair near a boundary is then in one bucket with both faces; mining/faces/buckets.py `owner`
says which one unit keeps it). Memory: one faces part. The merged marker lists per bucket its home faces,
its members, a digest of their ids and the parts holding them: the face-pair stage names its part of a
bucket by that digest, so new faces re-run only the buckets they join. Counts: faces = bucketed (in their
home bucket), per part and merged, the merged faces equal the faces stage's; spilled = extra memberships.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mining.faces.buckets import QUANTISER, assign, fit_quantiser, n_buckets
from runtime.stage import ItemReport, Resources, StageReport
from schemas.layout import SynthFiles
from stages.synthesis.parts import PartStage, add_counts, check_sum, digest
from store import storage

BUCKETS = SynthFiles.BUCKETS
BUCKET_SCHEMA = pa.schema([
    ("bucket", pa.int32()), ("home", pa.bool_()), ("buckets", pa.list_(pa.int32())), ("row", pa.int32()),
    ("source_id", pa.string()),
    ("descriptor", pa.list_(pa.float32(), 128)), ("landmarks", pa.list_(pa.float32(), 10)),
    ("height", pa.int32()), ("width", pa.int32()),
])


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class FaceBucketsStage(PartStage):
    name = "synth-face-buckets"
    kind = "face_buckets"
    table = BUCKETS
    resources = Resources(cpus=1.0)
    needs = ("synth-faces",)
    key, config_section = "face_buckets", "synthesis.faces"

    @property
    def faces_dir(self) -> str:
        from stages.synthesis.faces import FacesStage

        return self.layout.synth(FacesStage.kind)

    def inputs(self) -> list[str]:
        return [self.faces_dir]

    def settings(self) -> dict:
        f = self.cfg.synthesis.faces
        return {"quantiser": list(QUANTISER), "bucket_faces": f.bucket_faces, "fit_sample": f.fit_sample,
                "seed": self.cfg.synthesis.seed, "spill": f.bucket_spill}

    def _faces_marker(self) -> dict:
        m = storage.read_marker(self.faces_dir)
        if m is None:
            raise FileNotFoundError(f"no complete faces under {self.faces_dir}")
        return m

    def faces_parts(self) -> list[str]:
        return list(self._faces_marker()["parts"])

    def item_key(self, k: int) -> str:
        return self.faces_parts()[k]

    def quantiser(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The kept mean, centroids and their digest (a plan writes them first; row 0 holds the mean)."""
        if getattr(self, "_quant", None) is None:
            t = storage.read_parquet(SynthFiles(self.out).quantiser)
            c = np.asarray(t.column("centroid").to_pylist(), np.float32).reshape(t.num_rows, -1)
            self._quant = (c[0], c[1:], (t.schema.metadata or {}).get(b"digest", b"").decode())
        return self._quant

    def parts(self) -> list[str]:
        if getattr(self, "_part_cache", None) is None:
            base, q = self.settings(), self.quantiser()[2]
            self._part_cache = [storage.join(self.out, f"part-{k:05d}-{digest([base, name, q])}")
                                for k, name in enumerate(self.faces_parts())]
        return self._part_cache

    def plan(self) -> int:
        self._ensure_quantiser()
        return len(self.parts())

    def _ensure_quantiser(self) -> None:
        f, seed = self.cfg.synthesis.faces, self.cfg.synthesis.seed
        uri = SynthFiles(self.out).quantiser
        want = n_buckets(self._faces_marker()["counts"]["faces"], f.bucket_faces)
        if storage.exists(uri):
            meta = storage.parquet_file(uri).schema_arrow.metadata or {}
            kept = int(meta.get(b"buckets", b"0"))
            if meta.get(b"settings", b"").decode() == digest(self.settings()) and kept and \
                    want / 2 <= kept <= want * 2:
                return
        mean, c = fit_quantiser(self._sample(f.fit_sample) if want > 1 else np.zeros((0, 128)), want, seed)
        c = np.concatenate([mean[None], c])
        table = pa.table({"centroid": pa.array(c.tolist(), pa.list_(pa.float32(), c.shape[1]))})
        meta = {b"buckets": str(len(c) - 1).encode(), b"settings": digest(self.settings()).encode(),
                b"digest": digest([c.tobytes().hex()], 16).encode()}
        storage.atomic_write_parquet(uri, table.replace_schema_metadata(meta))
        self._quant = self._part_cache = None

    def _sample(self, size: int) -> np.ndarray:
        """Unit descriptors of about `size` faces, chosen by id (a content hash); one faces part in memory."""
        total = self._faces_marker()["counts"]["faces"]
        cut = min(1.0, size / max(total, 1)) * 16**8
        out = []
        for name in self.faces_parts():
            t = storage.parquet_file(storage.join(self.faces_dir, name, SynthFiles.FACES)).read(
                columns=["source_id", "descriptor"])
            keep = [i for i, s in enumerate(t.column("source_id").to_pylist()) if int(s[:8], 16) < cut]
            if keep:
                out.append(np.asarray(t.column("descriptor").take(keep).to_pylist(), np.float32))
        return unit_rows(np.concatenate(out)) if out else np.zeros((0, 128), np.float32)

    def run(self, k: int) -> ItemReport:
        part, name = self.parts()[k], self.faces_parts()[k]
        t = storage.parquet_file(storage.join(self.faces_dir, name, SynthFiles.FACES)).read(
            columns=["source_id", "descriptor", "landmarks", "height", "width"])
        x = unit_rows(np.asarray(t.column("descriptor").to_pylist(), np.float32).reshape(t.num_rows, 128))
        f = self.cfg.synthesis.faces
        mean, cent, _ = self.quantiser()
        home, member = assign(x, mean, cent, f.bucket_spill, f.bucket_max_extra)
        # one row per (face, bucket it is in), sorted by bucket, then row
        pairs = sorted((b, r) for r, bs in enumerate(member) for b in bs)
        b = np.asarray([p[0] for p in pairs], np.int32)
        order = np.asarray([p[1] for p in pairs], np.int64)
        ids = t.column("source_id").to_pylist()
        table = pa.table({"bucket": pa.array(b, pa.int32()), "home": pa.array(home[order] == b, pa.bool_()),
                          "buckets": pa.array([member[r] for r in order], pa.list_(pa.int32())),
                          "row": pa.array(order, pa.int32()),
                          "source_id": pa.array([ids[i] for i in order], pa.string()),
                          "descriptor": pa.array(x[order].tolist(), pa.list_(pa.float32(), 128)),
                          "landmarks": t.column("landmarks").take(order),
                          "height": t.column("height").take(order).cast(pa.int32()),
                          "width": t.column("width").take(order).cast(pa.int32())}, schema=BUCKET_SCHEMA)
        buckets = {}
        for v in np.unique(b).tolist():
            rows = order[b == v]
            buckets[str(v)] = [len(rows), int(np.count_nonzero(home[rows] == v)),
                               digest([name, [ids[i] for i in rows]], 16)]
        counts = {"faces": t.num_rows, "bucketed": int(sum(h for _, h, _ in buckets.values())),
                  "spilled": len(order) - t.num_rows}
        self.reconcile(counts)
        storage.atomic_write_parquet(storage.join(part, BUCKETS), table)
        storage.write_marker(part, {"counts": counts, "buckets": buckets})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c.get("faces", 0), c.get("bucketed", 0), "faces in their home buckets")

    def finalize(self, n: int) -> StageReport:
        parts = self.parts()
        if len(parts) != n:
            raise RuntimeError(f"{self.label}: {n} items ran but the faces now give {len(parts)} parts")
        total: dict = {"faces": 0, "bucketed": 0, "spilled": 0}
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
        check_sum(self.label, self._faces_marker()["counts"]["faces"], total["faces"], "faces of the faces stage")
        buckets = [{"bucket": b, "members": sum(e[1] for e in per[b]), "faces": sum(e[2] for e in per[b]),
                    "digest": digest([e[3] for e in per[b]]), "parts": [e[0] for e in per[b]]} for b in sorted(per)]
        names = [p.rsplit("/", 1)[-1] for p in parts]
        total["buckets"] = len(buckets)
        storage.write_marker(self.out, {"counts": total, "parts": names, "units": n,
                                        "faces_parts": self.faces_parts(), "buckets": buckets})
        self._remove_old_parts(set(names))
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]
