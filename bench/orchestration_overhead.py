"""Orchestration overhead: the mining flow (Prefect over Ray, `PrefectRayExecutor`) against the same stage
list run by the local executor in one process (`flows/direct.py`), side by side.

    python bench/orchestration_overhead.py                  # the demo corpus
    python bench/orchestration_overhead.py --images 1000    # N images made from the demo photos

Both ingest, embed (offline embedder), cluster, mine general-editing pairs, write instructions (the demo's
known transformations, or the template writer for a generated corpus) and pack shards, each into a fresh
root. The Prefect server is started before timing (a temporary one), so its start-up is not counted;
Ray's start-up is. Generated images: random crops (40-100 %), flips, colour jitter and JPEG quality 60-95
of the demo photos, 256-640 px on the long side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows import settings  # noqa: E402

settings.apply()


def direct(corpus: str, root: str, writer: dict) -> int:
    from flows.direct import run_mining
    from schemas.config import RunConfig

    res = run_mining(RunConfig(root=root), source=corpus, writer=writer)
    return res["general_editing"]["shards"]["samples"]


def orchestrated(corpus: str, root: str, writer: dict) -> int:
    from flows.pipelines import mine_flow

    res = mine_flow(source=corpus, root=root, writer=writer)
    return res["general_editing"]["shards"]["samples"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--images", type=int, default=0, help="generate this many images (0: the demo corpus)")
    args = ap.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from tasks.demo_corpus import build_demo_corpus, generate_variants

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        corpus = str(Path(tmp) / "corpus")
        if args.images:
            generate_variants(Path(corpus), args.images)
            writer, what = {"kind": "template"}, f"{args.images} generated images"
        else:
            build_demo_corpus(corpus)
            writer, what = {"kind": "demo", "corpus": corpus}, "demo corpus"
        times: dict[str, float] = {"direct": float("inf"), "flow": float("inf")}
        samples = {}
        for r in range(args.repeats):
            for name, fn in (("direct", direct), ("flow", orchestrated)):
                t0 = time.perf_counter()
                samples[name] = fn(corpus, str(Path(tmp) / f"{name}-{r}"), writer)
                times[name] = min(times[name], time.perf_counter() - t0)
    assert samples["direct"] == samples["flow"], samples
    print(f"{what}, {samples['direct']} packed samples, best of {args.repeats}")
    print(f"{'local executor, one process':<36} {times['direct']:7.2f} s")
    print(f"{'mining flow (Prefect + Ray workers)':<36} {times['flow']:7.2f} s   "
          f"ratio {times['flow'] / times['direct']:.2f}x   overhead {times['flow'] - times['direct']:.1f} s")


if __name__ == "__main__":
    main()
