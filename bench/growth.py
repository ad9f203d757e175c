"""Growth: every stage of a mining run at several corpus sizes, on a local two-node Ray cluster, with per stage
its units, wall seconds, images/s per core and the peak RSS of one unit. Peak RSS per unit should stay flat as
N grows, and time grow linearly.

    python bench/growth.py                          # 10,000 / 50,000 / 100,000 images, 1 M vectors
    python bench/growth.py --quick                  # 500 / 1,000 images, 20,000 vectors: a smoke run
    python bench/growth.py --images 10000 --vectors 0 --out growth.md

Images: generated from the demo photos (bench/_corpus: 96-128 px on the long side), then the mining flow's stage
list (flows/pipelines.py `run_mining`) on the Prefect-over-Ray executor, as `aceforge mine` runs it, with every
clustering preset, every synthesis task (faces included) on `--fraction` of the images and the template
instruction writer. Vectors (bench/growth_vectors.py): synthetic embeddings partitions in the embed stage's
layout over a synthetic catalog, then K-means, mining, instructions and packing of pairs.

Figures per stage, from the executor (runtime/executors.py): `units` its work items, `s` the stage's wall time
(plan, items over both nodes, finalize), `img/s/core` N over the items' seconds summed (an item holds one core;
synthesis stages read only their fraction of the N images), `peak MiB` the largest peak RSS of a worker process
during one item, `+MiB` the largest rise of one item's peak over its process's RSS before it (Ray reuses worker
processes), `nodes` the Ray nodes its items ran on. Generated corpora are cached under --cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIGURES = ("units", "s", "img/s/core", "peak MiB", "+MiB", "nodes")


def stage_row(n: int, execution, wall_s: float) -> dict | None:
    """One stage's figures at corpus size n (None: its items did not run now)."""
    if execution is None or not execution.ran:
        return None
    return {"units": execution.items, "s": wall_s,
            "img/s/core": n / execution.seconds if execution.seconds else 0.0,
            "peak MiB": execution.peak_rss_mb, "+MiB": execution.rss_growth_mb, "nodes": execution.nodes}


def _corpus(cache: Path, n: int) -> Path:
    from stages.corpus.demo_corpus import generate_variants

    corpus = cache / f"growth-corpus-{n}"
    if not (corpus / f"{n - 1:06d}.jpg").exists():
        t0 = time.perf_counter()
        generate_variants(corpus, n, long_side=(96, 128))
        print(f"generated {n} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return corpus


def presets() -> list[str]:
    """Every preset the mining flow computes the features of."""
    from mining.pairs.presets import PRESETS, check_presets

    ok = []
    for name in PRESETS:
        try:
            check_presets([name])
        except ValueError:
            continue
        ok.append(name)
    return ok


def run_config(root: str, fraction: float) -> dict:
    from schemas.config import FACE_TASKS, SYNTH_TASKS

    return {"root": root, "mining": {"presets": presets()},
            "synthesis": {"tasks": list(SYNTH_TASKS) + list(FACE_TASKS), "fraction": fraction,
                          "faces": {"fraction": fraction}}}


def run_images(n: int, cache: Path, fraction: float, keep: bool) -> dict[str, dict]:
    """{stage label: figures} of one mining run over n generated images, in stage order."""
    from prefect import flow

    from flows.pipelines import run_config as parse, run_mining
    from runtime.executors import PrefectRayExecutor

    corpus = _corpus(cache, n)
    root = tempfile.mkdtemp(prefix=f"growth-{n}-", dir=cache)
    cfg = parse(run_config(root, fraction), None)
    rows: dict[str, dict] = {}
    last = [time.perf_counter()]

    def announce(stage, rep, ran_now: bool) -> None:
        now = time.perf_counter()
        row = stage_row(n, rep.execution, now - last[0])
        last[0] = now
        if row is not None:
            rows[stage.label] = row
            print(f"{n:>8} {stage.label:<34} " + "  ".join(f"{k} {_fmt(row[k])}" for k in FIGURES), flush=True)

    @flow(name="aceforge-growth", log_prints=True)
    def growth_flow() -> None:
        executor = PrefectRayExecutor(cfg.orchestration.items_in_flight, cfg.orchestration.embed_actors)
        try:
            run_mining(executor, cfg, str(corpus), announce=announce)
        finally:
            executor.close()

    t0 = time.perf_counter()
    try:
        growth_flow()
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{n:>8} images: the run took {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}"
    return str(v)


def markdown(title: str, sizes: list[int], runs: list[dict[str, dict]]) -> str:
    """Stages as rows; each figure's cell holds its values at every size, in order."""
    labels: list[str] = []
    for r in runs:
        labels += [s for s in r if s not in labels]
    at = " / ".join(f"{n:,}" for n in sizes)
    head = ["stage"] + [f"{f} ({at})" for f in FIGURES]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in labels:
        cells = [s] + [" / ".join(_fmt(r[s][f]) if s in r else "-" for r in runs) for f in FIGURES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="*", default=None, help="corpus sizes (default 10000 50000 100000)")
    ap.add_argument("--vectors", type=int, nargs="*", default=None,
                    help="embedding-level sizes (default 1000000; 0: skip)")
    ap.add_argument("--quick", action="store_true", help="500 and 1,000 images, 20,000 vectors")
    ap.add_argument("--k", type=int, default=None, help="K-means clusters of the vector runs (default: n/50, "
                    "at most 10,000)")
    ap.add_argument("--batch-rows", type=int, default=None, help="mining.batch_rows of the vector runs")
    ap.add_argument("--layout-rows", type=int, default=None, help="mining.layout_rows of the vector runs")
    ap.add_argument("--fraction", type=float, default=0.05, help="synthesis.fraction (faces too)")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aceforge-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the run roots under --cache")
    ap.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = ap.parse_args()
    images = args.images if args.images is not None else ([500, 1000] if args.quick else [10_000, 50_000, 100_000])
    vectors = args.vectors if args.vectors is not None else ([20_000] if args.quick else [1_000_000])
    vectors = [v for v in vectors if v > 0]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    from bench._ray_cluster import two_node_cluster

    tables = []
    t0 = time.perf_counter()
    with two_node_cluster(cpus_per_node=args.cpus_per_node) as address:
        print(f"two-node Ray cluster at {address}, {args.cpus_per_node} CPU per node; "
              f"{os.cpu_count()} cores on this machine", flush=True)
        if images:
            runs = [run_images(n, cache, args.fraction, args.keep) for n in images]
            tables.append(markdown(f"Images (synthesis on {args.fraction:.0%})", images, runs))
        if vectors:
            from bench.growth_vectors import run_vectors

            runs = [run_vectors(n, cache, args.keep, k=args.k, batch_rows=args.batch_rows, layout_rows=args.layout_rows)
                    for n in vectors]
            tables.append(markdown("Synthetic vectors", vectors, runs))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s\n")
    text = "\n".join(tables)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
