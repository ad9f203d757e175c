"""Per stage: seconds, images/s per core and peak RSS per work item, at several corpus sizes.

    python bench/per_stage.py --images 1000 10000 50000

Every item runs in a fresh process (so its peak RSS is its own), with the local executor's steps (plan,
items, finalize) and the default configuration (ingest partitions of 10,000 files, decoded in the item's
own process, embedding partitions of 4,096, K-means k = N/50, 256 clusters per mining batch, the offline
embedder, the template instruction writer). The baseline beside each figure is a fresh process that only
imports the stage's module (what every item pays before its work). Peak RSS per item should stay flat as
N grows for ingest, embed and mine; K-means grows with k (the fit) and N (8 bytes of label per row);
instructions and packing (one item each) stream their pairs and hold an id -> URI map of their images. Generated corpora are cached under --cache.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    """This process's peak resident set (VmHWM: per address space, so a fresh process starts from zero;
    ru_maxrss would carry the parent's peak across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _item(spec: dict, k: int) -> tuple[float, float]:
    from runtime.stage import build

    stage = build(spec)
    t0 = time.perf_counter()
    stage.setup()
    stage.run(k)
    return time.perf_counter() - t0, _rss_mb()


def _imports(module: str) -> float:
    import importlib

    importlib.import_module(module)
    return _rss_mb()


def _fresh(fn, *args):
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


def run_size(n: int, cache: Path, keep: bool) -> list[tuple]:
    from schemas.config import RunConfig
    from stages.corpus.cluster import cluster_stages
    from stages.corpus.demo_corpus import generate_variants
    from stages.corpus.embed import EmbedStage
    from stages.corpus.ingest import IngestStage
    from stages.pairs.instruct import InstructStage
    from stages.pairs.mine import MineStage
    from stages.pairs.pack import PackStage

    corpus = cache / f"corpus-{n}"
    if not (corpus / f"{n - 1:06d}.jpg").exists():
        t0 = time.perf_counter()
        generate_variants(corpus, n)
        print(f"generated {n} images in {time.perf_counter() - t0:.0f} s", flush=True)
    root = tempfile.mkdtemp(prefix=f"aceforge-bench-{n}-", dir=cache if keep else None)
    cfg = RunConfig(root=root, ingest={"workers": 1})
    stages = [IngestStage(cfg, source=str(corpus)), EmbedStage(cfg), *cluster_stages(cfg),
              MineStage(cfg, preset="general_editing"),
              InstructStage(cfg, preset="general_editing", writer={"kind": "template"}),
              PackStage(cfg, preset="general_editing", shard_name="bench")]
    rows = []
    for st in stages:
        base = _fresh(_imports, type(st).__module__)
        st.invalidate()
        items = st.plan()
        item_s, peaks = 0.0, []
        for k in range(items):
            s, rss = _fresh(_item, st.spec(), k)
            item_s += s
            peaks.append(rss)
        t1 = time.perf_counter()
        rep = st.finalize(items)
        fin = time.perf_counter() - t1
        total = item_s + fin  # the items' work and the finalize; process start-ups are not counted
        rows.append((n, st.label, items, total, n / total, max(peaks), base))
        print(f"{n:>7} {st.label:<28} {items:>5} items {total:8.1f} s {n / total:9.0f} img/s/core  "
              f"peak RSS/item {max(peaks):7.0f} MB   (import-only baseline {base:5.0f} MB)  "
              f"{_short(rep.counts)}", flush=True)
    return rows


def _short(counts: dict) -> str:
    keys = ("accepted", "embedded", "k", "policy", "pairs", "with_instruction", "samples")
    return ", ".join(f"{k}={counts[k]}" for k in keys if k in counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aceforge-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the run roots under --cache")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"cores: 1 per item (items run one after another); {os.cpu_count()} on this machine")
    for n in args.images:
        run_size(n, cache, args.keep)


if __name__ == "__main__":
    main()
