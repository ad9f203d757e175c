"""Exact dedup by hash bucket against a bare Python set over the same hashes: time and peak RSS.

    python bench/dedup.py [--hashes 1000000] [--partitions 100] [--buckets 64] [--duplicates 0.1] [--rounds 1]

Writes a synthetic catalog's partitions (sorted URIs, sha256 ids, a fraction of them copies of others),
then times, each side in a fresh process (its peak RSS is that process's, a bare process's shown apart):
  set       - read every partition's ids and keep a set of them (what one process holding every id costs)
  units     - the dedup units (stages.corpus.ingest_dedup.dedup_bucket), one per bucket, one after another
  merge     - finalize's streaming merge of the catalog from the partitions and the units' tables
The partitions' hashes files (written by the ingest units, untimed here) are written once beforehand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from bench._timing import Measured, Side, interleave, report  # noqa: E402
from schemas.arrow import IMAGE_RECORD_SCHEMA, QUARANTINE_SCHEMA  # noqa: E402
from schemas.layout import CatalogFiles, RunLayout  # noqa: E402
from stages.corpus.ingest_dedup import sorted_by_uri, write_hashes, write_part  # noqa: E402
from store import storage  # noqa: E402


def make_catalog(root: str, n: int, parts: int, buckets: int, dup_fraction: float) -> None:
    """A plan of one generation and its partitions: n images, every 1/dup_fraction-th a copy of an earlier one."""
    lay = RunLayout(root)
    per = -(-n // parts)
    step = max(2, round(1 / dup_fraction)) if dup_fraction > 0 else 0
    plan = {"source": "/synthetic", "config": "bench", "skipped": {}, "inputs": n, "dedup_buckets": buckets,
            "generations": [parts], "partitions": [[["files", []]] for _ in range(parts)]}
    storage.atomic_write_bytes(lay.ingest_plan, json.dumps(plan).encode())
    for k in range(parts):
        rows = range(k * per, min(n, (k + 1) * per))
        src = [i - step + 1 if step and i % step == step - 1 else i for i in rows]
        ids = [hashlib.sha256(str(s).encode()).hexdigest() for s in src]
        m = len(ids)
        imgs = sorted_by_uri(pa.table({
            "id": ids, "uri": [f"/synthetic/{i:010d}.jpg" for i in rows], "width": [64] * m, "height": [64] * m,
            "format": ["JPEG"] * m, "mode": ["RGB"] * m, "source": ["/synthetic"] * m, "nbytes": [1000] * m},
            schema=IMAGE_RECORD_SCHEMA))
        write_part(lay.ingest_part(k, "images"), imgs)
        write_part(lay.ingest_part(k, "quarantine"), sorted_by_uri(QUARANTINE_SCHEMA.empty_table()))
        write_hashes(lay.ingest_part(k, "hashes"), imgs, buckets)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(what: str, root: str) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, rows kept) of one side, in this fresh process."""
    from stages.corpus.ingest import _plan, finalize_ingest
    from stages.corpus.ingest_dedup import dedup_bucket

    plan = _plan(root)
    t0 = time.perf_counter()
    if what == "bare":
        kept = 0
    elif what == "set":
        seen: set[str] = set()
        for k in range(len(plan["partitions"])):
            seen.update(storage.read_parquet(RunLayout(root).ingest_part(k, "images")).column("id").to_pylist())
        kept = len(seen)
    elif what == "units":
        kept = sum(max(0, dedup_bucket(root, plan, 0, b)) for b in range(plan["dedup_buckets"]))
    else:
        kept = finalize_ingest(root, len(plan["partitions"])).accepted
    return time.perf_counter() - t0, _peak_mb(), kept


def in_child(what: str, root: str) -> Measured:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        seconds, peak, kept = pool.submit(_child, what, root).result()
    return Measured(seconds, (peak, kept))


def _fresh_units(root: str) -> None:
    cat = CatalogFiles(RunLayout(root).catalog)
    fs, path = storage.fs_path(cat.dedup_dir)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    for uri in (cat.images, cat.duplicates, cat.quarantine, RunLayout.marker(cat.uri)):
        fs, path = storage.fs_path(uri)
        if fs.exists(path):
            fs.rm(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--buckets", type=int, default=64)
    ap.add_argument("--duplicates", type=float, default=0.1, help="fraction of the images that copy another")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "root")
        t0 = time.perf_counter()
        make_catalog(root, a.hashes, a.partitions, a.buckets, a.duplicates)
        print(f"{a.hashes:,} hashes in {a.partitions} partitions, {a.buckets} buckets: written in "
              f"{time.perf_counter() - t0:.1f} s")
        bare = in_child("bare", root).result[0]
        t = interleave([Side("set", lambda: in_child("set", root)),
                        Side("units", lambda _: in_child("units", root), setup=lambda: _fresh_units(root)),
                        Side("merge", lambda: in_child("merge", root))], rounds=a.rounds)
        print("\n".join(report(t)))
        print(f"peak RSS (MB; a bare process with pyarrow: {bare:.0f}): "
              + ", ".join(f"{name} {tm.result[0]:.0f}" for name, tm in t.items()))
        kept = {name: tm.result[1] for name, tm in t.items()}
        print(f"rows kept: set {kept['set']:,} distinct ids; merge {kept['merge']:,} catalog rows "
              f"(units: {kept['units']:,} rows decided)")
        if kept["set"] != kept["merge"]:
            raise SystemExit("the set and the bucketed dedup disagree")


if __name__ == "__main__":
    main()
