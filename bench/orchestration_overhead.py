"""Orchestration overhead: the mining flow (Prefect over Ray, `PrefectRayExecutor`) against the same stage
list run by the local executor in one process (`flows/direct.py`), side by side.

    python bench/orchestration_overhead.py                  # the demo corpus
    python bench/orchestration_overhead.py --images 1000    # N images made from the demo photos
    python bench/orchestration_overhead.py --rounds 1       # interleaved runs of each side (default 3)

Both ingest, embed (offline embedder), cluster, mine general-editing pairs, write instructions (the demo's
known transformations, or the template writer for a generated corpus) and pack shards, each into a fresh
root. The Prefect server is started before timing (a temporary one), so its start-up is not counted;
Ray's start-up is. Generated images: random crops (40-100 %), flips, colour jitter and JPEG quality 60-95
of the demo photos, 256-640 px on the long side. The two sides run interleaved; the ratio is of the best
runs (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import Side, interleave, ratio, report  # noqa: E402
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
    ap.add_argument("--rounds", "--repeats", type=int, default=3, help="interleaved runs of each side")
    ap.add_argument("--images", type=int, default=0, help="generate this many images (0: the demo corpus)")
    args = ap.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from stages.corpus.demo_corpus import build_demo_corpus, generate_variants

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        corpus = str(Path(tmp) / "corpus")
        if args.images:
            generate_variants(Path(corpus), args.images)
            writer, what = {"kind": "template"}, f"{args.images} generated images"
        else:
            build_demo_corpus(corpus)
            writer, what = {"kind": "demo", "corpus": corpus}, "demo corpus"
        runs = itertools.count()
        fresh = lambda: str(Path(tmp) / f"root-{next(runs)}")  # noqa: E731
        t = interleave([Side("direct", lambda root: direct(corpus, root, writer), setup=fresh),
                        Side("flow", lambda root: orchestrated(corpus, root, writer), setup=fresh)],
                       rounds=args.rounds)
    assert t["direct"].result == t["flow"].result, (t["direct"].result, t["flow"].result)
    print(f"{what}, {t['direct'].result} packed samples, {args.rounds} interleaved round(s)")
    print("\n".join(report(t, "direct", labels={"direct": "local executor, one process",
                                                 "flow": "mining flow (Prefect + Ray workers)"})))
    print(f"ratio {ratio(t, 'flow', 'direct'):.2f}x, of bests   overhead {t['flow'].best - t['direct'].best:.1f} s")


if __name__ == "__main__":
    main()
