"""The supervision gate every packer puts in front of its shard writer, and the audit of a packed shard set.

`Gate(cfg)` wraps a stream of AceSamples: each is checked (mining/supervision.py); a passing sample is
written with the scores of its checks added to its lineage, a failing one is dropped and counted by task and
reason. The counts go into the shard set's marker (`supervision`) and the stage's report; a packer's
reconciliation is `samples promised = samples written + samples dropped`.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

from mining.supervision import CHECKER, Tally, check_view, view
from schemas.config import ShardConfig, SupervisionConfig
from schemas.records import AceSample

EXAMPLES = 5  # failing keys kept per task and reason in the marker, to look at


class Gate:
    """`shards`: the shard set's shard config; each sample is checked as it will be written (in its one image
    extension: a PNG source packed into a JPEG shard set is checked after its JPEG encoding) and yielded so."""

    def __init__(self, cfg: SupervisionConfig, shards: ShardConfig | None = None, *, quality: bool = False,
                 pair_scorer=None):
        self.cfg = cfg
        self.shards = shards
        self.quality = quality  # a passing sample gets its quality scores (mining/quality.py) from the same view
        self.pair_scorer = pair_scorer
        self.tally = Tally()
        self.examples: dict[str, list[str]] = {}

    def _as_written(self, s: AceSample) -> AceSample:
        from store.shards import one_extension

        if self.shards is None:
            return s
        if self.shards.image_ext == "auto":  # as the writer resolves it: the first sample's target's extension
            self.shards = self.shards.model_copy(update={"image_ext": s.target.image_ext})
        return one_extension(s, self.shards)

    def __call__(self, samples: Iterable[AceSample]) -> Iterator[AceSample]:
        for s in map(self._as_written, samples):
            v = view(s) if self.cfg.enabled or self.quality else None
            if not self.cfg.enabled:
                self.tally.add(s.task, None)
                yield self._scored(s, v)
                continue
            why, scores = check_view(v, self.cfg)
            self.tally.add(s.task, why)
            if why is not None:
                keys = self.examples.setdefault(f"{s.task}:{why}", [])
                if len(keys) < EXAMPLES:
                    keys.append(s.key)
                continue
            lineage = s.lineage.model_copy(update={"scores": {**s.lineage.scores,
                                                              **{f"supervision_{k}": v for k, v in scores.items()}}})
            yield self._scored(s.model_copy(update={"lineage": lineage}), v)

    def _scored(self, s: AceSample, v) -> AceSample:
        if not self.quality:
            return s
        from mining.quality import score_view
        from schemas.records import Role

        has_edit = any(u.role is Role.EDIT for u in s.units)
        return s.model_copy(update={"quality": score_view(v, has_edit, self.pair_scorer)})

    def summary(self) -> dict:
        return {"checker": "/".join(CHECKER), "enabled": self.cfg.enabled, **self.tally.as_dict(),
                "examples": self.examples}


def settings(cfg: SupervisionConfig) -> dict:
    """What a packer's version depends on: the checks' version and thresholds."""
    return {"checker": list(CHECKER), **cfg.model_dump(mode="json")}


def audit(samples: Iterable[AceSample], cfg: SupervisionConfig, failures: list | None = None,
          limit: int | None = None, keep: int | None = None) -> Tally:
    """Run every check over `samples` (the gate's checks, whatever `cfg.enabled` says). The first `keep` (all
    when None) failing samples are appended to `failures` as (key, task, reason, scores)."""
    tally = Tally()
    for n, s in enumerate(samples):
        if limit is not None and n >= limit:
            break
        why, scores = check_view(view(s), cfg)
        tally.add(s.task, why)
        if why is not None and failures is not None and (keep is None or len(failures) < keep):
            failures.append((s.key, s.task, why, scores))
    return tally


def supervision_dropped(shard_set: str) -> dict:
    """Samples the gate dropped per task and reason, from a finished shard set's marker (also when the shard set was
    complete before this run and nothing was checked now)."""
    from store import storage

    return ((storage.read_marker(shard_set) or {}).get("supervision") or {}).get("dropped", {})


def reconcile(label: str, promised: Counter | dict, gate: Gate) -> None:
    """promised per task == checked per task (every sample the stages promised reached the gate)."""
    want = {t: n for t, n in dict(promised).items() if n}
    got = {t: n for t, n in gate.tally.checked.items() if n}
    if want != got:
        raise RuntimeError(f"{label}: the supervision gate saw {got} samples per task, the stages promise {want}: "
                           "no marker written")


def merged_summary(cfg: SupervisionConfig, summaries: Iterable[dict]) -> dict:
    """The gate summaries of a shard set's units as one (what a one-gate set's marker holds): checked and
    dropped summed per task (and reason), the first EXAMPLES failing keys per task and reason."""
    checked: Counter[str] = Counter()
    dropped: dict[str, Counter[str]] = {}
    examples: dict[str, list[str]] = {}
    for s in summaries:
        checked.update(s.get("checked", {}))
        for t, rs in s.get("dropped", {}).items():
            dropped.setdefault(t, Counter()).update(rs)
        for k, keys in s.get("examples", {}).items():
            have = examples.setdefault(k, [])
            have += keys[:EXAMPLES - len(have)]
    return {"checker": "/".join(CHECKER), "enabled": cfg.enabled,
            "checked": dict(sorted((t, n) for t, n in checked.items())),
            "dropped": {t: dict(sorted(c.items())) for t, c in sorted(dropped.items())}, "examples": examples}
