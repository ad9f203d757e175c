"""Contact sheets of a packed shard set: N random samples per task, one PNG per task, for a person to judge
whether each sample does what its instruction says. Each row also carries today's supervision verdict.

    python bench/contact_sheets.py SHARD_SET_DIR --out DIR [--per-task 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from pathlib import Path


def pick(uri: str, per_task: int, seed: int) -> tuple[dict[str, list], Counter]:
    """Per task, a uniform sample of `per_task` samples (reservoir, in one pass), and the count per task."""
    from store.shard_reader import read_shard_set

    rng = random.Random(seed)
    seen: Counter = Counter()
    kept: dict[str, list] = {}
    for s in read_shard_set(uri):
        seen[s.task] += 1
        bucket = kept.setdefault(s.task, [])
        if len(bucket) < per_task:
            bucket.append(s)
        else:
            j = rng.randrange(seen[s.task])
            if j < per_task:
                bucket[j] = s
    return kept, seen


def verdicts(samples: list) -> list[str]:
    """'supervision: pass' or the reason a sample fails today's checks, with the scores they measured."""
    from mining.supervision import check
    from schemas.config import SupervisionConfig

    cfg = SupervisionConfig()
    out = []
    for s in samples:
        try:
            why, scores = check(s, cfg)
        except Exception as e:  # a check that crashes on a sample is itself worth seeing on the sheet
            out.append(f"supervision: error {type(e).__name__}: {e}")
            continue
        measured = ", ".join(f"{k}={v:.4g}" for k, v in sorted(scores.items()))
        out.append(f"supervision: {why or 'pass'}" + (f" ({measured})" if measured else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shard_set", help="a packed shard set (its folder holds the manifest)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--per-task", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="leave out the supervision verdict line")
    a = ap.parse_args()

    from flows.sheets import contact_sheet

    kept, seen = pick(a.shard_set, a.per_task, a.seed)
    if not kept:
        raise SystemExit(f"{a.shard_set}: no samples")
    print(f"{a.shard_set}: {sum(seen.values())} samples, {len(seen)} tasks")
    for task in sorted(kept):
        samples = sorted(kept[task], key=lambda s: s.key)
        notes = None if a.no_check else verdicts(samples)
        path = contact_sheet(samples, a.out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', task)}.png", notes=notes)
        fails = Counter(n.split(" ")[1] for n in notes or [] if not n.startswith("supervision: pass"))
        extra = f"  failing checks: {dict(fails)}" if fails else ""
        print(f"  {task:32s} {seen[task]:6d} samples, {len(samples)} drawn -> {path}{extra}")


if __name__ == "__main__":
    main()
