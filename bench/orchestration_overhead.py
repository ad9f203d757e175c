"""Orchestration overhead: the mining flow (Prefect tasks, Ray actors) against the same stage functions
called directly in one process, on the demo corpus, side by side.

    python bench/orchestration_overhead.py [--repeats 1]

Both ingest the demo corpus, embed (offline embedder), cluster, mine general-editing pairs, write
instructions from the known transformations and pack shards, each into a fresh root. The Prefect server
is started before timing (a temporary one), so its start-up is not counted; Ray's start-up is.
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


def direct(corpus: str, root: str) -> int:
    from flows.direct import run_mining
    from schemas.config import RunConfig
    from tasks.ingest import ingest
    from tasks.units import demo_known_writer

    cfg = RunConfig(root=root)
    ingest(corpus, root, cfg.ingest)
    res = run_mining(cfg, writer=demo_known_writer(corpus, root), shard_prefix="mined")
    return res.shards["general_editing"].samples


def orchestrated(corpus: str, root: str) -> int:
    from flows.pipelines import mine_flow

    res = mine_flow(source=corpus, root=root, writer={"kind": "demo", "corpus": corpus})
    return res["general_editing"]["shards"]["samples"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from tasks.demo_corpus import build_demo_corpus

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        corpus = str(Path(tmp) / "corpus")
        build_demo_corpus(corpus)
        times: dict[str, float] = {"direct": float("inf"), "flow": float("inf")}
        samples = {}
        for r in range(args.repeats):
            for name, fn in (("direct", direct), ("flow", orchestrated)):
                t0 = time.perf_counter()
                samples[name] = fn(corpus, str(Path(tmp) / f"{name}-{r}"))
                times[name] = min(times[name], time.perf_counter() - t0)
    assert samples["direct"] == samples["flow"], samples
    print(f"demo corpus, {samples['direct']} packed samples, best of {args.repeats}")
    print(f"{'stage functions, one process':<34} {times['direct']:7.2f} s")
    print(f"{'mining flow (Prefect + Ray actors)':<34} {times['flow']:7.2f} s   ratio {times['flow'] / times['direct']:.2f}x"
          f"   overhead {times['flow'] - times['direct']:.1f} s")


if __name__ == "__main__":
    main()
