"""Packing a shard set by units: one worker (the local executor) against two Ray workers (the Ray side of
runtime/executors.py), side by side in samples/s.

    PYTHONPATH=. python bench/pack_parallel.py                      # 8 units of 64 samples
    PYTHONPATH=. python bench/pack_parallel.py --units 16 --per-unit 128 --side 256 --rounds 3

The units' inputs (records of PNG images, made once, untimed) are shared; each run packs them into a fresh
shard set: records read, samples through the supervision gate, tars written and hashed, manifest merged.
Ray is started and its two workers warmed up before timing (an untimed round); the two sides run
interleaved and the ratio is of the best runs (bench/_timing.py). Two workers can reach 2x only on a
machine with two idle cores.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from PIL import Image  # noqa: E402

from bench._timing import Side, interleave, ratio, report  # noqa: E402
from runtime.stage import Resources  # noqa: E402
from schemas.config import RunConfig  # noqa: E402
from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role  # noqa: E402
from stages.pack_units import UnitPackStage  # noqa: E402
from stages.synthesis.parts import RECORDS, iter_part_records, png  # noqa: E402
from store import storage  # noqa: E402

TASK = "inpainting"


class BenchPack(UnitPackStage):
    """Packs prepared record parts (`params["parts"]`): one sample per record."""

    name = "pack-bench"
    resources = Resources(cpus=1.0)

    @property
    def out(self) -> str:
        return self.layout.shards("bench")

    def unit_inputs(self):
        return [(d.rsplit("/", 1)[-1], d) for d in self.params["parts"]]

    def inputs(self):
        return list(self.params["parts"])

    def settings(self):
        return {"shards": self.cfg.shards.model_dump(mode="json")}

    def unit_promised(self, k):
        return {TASK: storage.read_marker(self.params["parts"][k])["counts"]["records"]}

    def unit_samples(self, k):
        for rec in iter_part_records(self.params["parts"][k]):
            yield AceSample(key=rec["sample_id"], task=TASK, instruction="Fill the masked area of {image}.",
                            units=[ConditionUnit(role=Role.EDIT, image=rec["source_png"])],
                            target=ConditionUnit(role=Role.TARGET, image=rec["target_png"]),
                            lineage=Lineage(source_ids=[rec["sample_id"]],
                                            generators=[Generator(name="bench", version="1")]))


def make_parts(where: Path, units: int, per_unit: int, side: int) -> list[str]:
    """Record parts of smooth images with noise (PNGs of a realistic size), one per unit."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    parts = []
    for u in range(units):
        rows = []
        for i in range(per_unit):
            base = (np.stack([xx, yy, (xx + yy) // 2], -1) * (255 / side) + rng.integers(0, 24, (side, side, 3)))
            src = base.clip(0, 255).astype(np.uint8)
            tgt = src.copy()
            tgt[side // 4: side // 2, side // 4: side // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
            key = hashlib.sha256(f"{u}-{i}".encode()).hexdigest()[:16]
            rows.append({"sample_id": key, "source_png": png(src), "target_png": png(tgt)})
        d = str(where / f"part-{u:05d}-{hashlib.sha256(str(u).encode()).hexdigest()[:8]}")
        table = pa.Table.from_pylist(rows)
        storage.atomic_write_parquet(storage.join(d, RECORDS), table)
        storage.write_marker(d, {"counts": {"records": len(rows)}})
        parts.append(d)
    return parts


def _fresh(parts: list[str], maxcount: int):
    def setup():
        root = tempfile.mkdtemp(prefix="pack-bench-")
        return BenchPack(RunConfig(root=root, shards={"maxcount": maxcount}), parts=parts)
    return setup


def one_worker(stage: BenchPack) -> int:
    from runtime.executors import LocalExecutor

    return LocalExecutor().run(stage).counts["samples"]


def two_ray_workers(stage: BenchPack) -> int:
    from runtime.executors import RayWorkers

    n = stage.plan()
    workers = RayWorkers(stage, 1)  # a Ray task per item, one CPU each: two in flight use two workers
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(workers.run, range(n)))
    finally:
        workers.close()
    return stage.finalize(n).counts["samples"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--per-unit", type=int, default=64)
    ap.add_argument("--side", type=int, default=192, help="image side in pixels")
    ap.add_argument("--maxcount", type=int, default=32, help="samples per tar")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from bench.pack_parallel import BenchPack as Importable  # the workers rebuild the stage by module name
    from runtime.ray_pool import ensure_ray

    globals()["BenchPack"] = Importable
    work = Path(tempfile.mkdtemp(prefix="pack-bench-inputs-"))
    parts = make_parts(work, args.units, args.per_unit, args.side)
    ensure_ray()
    samples = args.units * args.per_unit
    t = interleave([Side("1 worker", one_worker, _fresh(parts, args.maxcount)),
                    Side("2 Ray workers", two_ray_workers, _fresh(parts, args.maxcount))],
                   rounds=args.rounds, warmup=1)
    print(f"{args.units} units x {args.per_unit} samples ({args.side}px PNG pairs), {args.maxcount} per tar")
    print("\n".join(report(t, baseline="1 worker")))
    for name, tm in t.items():
        print(f"{name}: {samples / tm.best:.0f} samples/s (best of {len(tm.seconds)}), "
              f"{samples / tm.median:.0f} median")
    print(f"2 Ray workers / 1 worker: {ratio(t, '1 worker', '2 Ray workers'):.2f}x")


if __name__ == "__main__":
    main()
