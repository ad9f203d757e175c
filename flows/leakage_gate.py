"""Training's leakage gate: the shard sets checked against an evaluation source before a run starts.

With `train.leakage_source` set, every image of every sample is matched against the evaluation images
(store/leakage.py); a sample is leaked when one of its images matches at a level of `train.leakage_levels`.
`refuse` ends the run before Ray starts, in one line naming the report; `drop` trains on a filtered copy of
each set that leaks (`aceforge shards filter`'s writer), named by the leaked keys so a re-run reuses it.
"""

from __future__ import annotations

import hashlib

from schemas.config import RunConfig
from schemas.layout import ShardFiles
from store import storage


def guard_leakage(cfg: RunConfig, uris: list[str]) -> list[str]:
    """The shard sets to train on: `uris`, or their filtered copies (drop); ValueError when refused."""
    train = cfg.train
    if not train.leakage_source or not uris:
        return uris
    from mining.models.embedders import make_embedder
    from store.leakage import check_leakage, leakage_report_uri, write_leakage_report

    embed = make_embedder(cfg.mining.embedder, cfg.models_dir)
    embed.setup()
    rep = check_leakage(train.leakage_source, uris, embed)
    report = leakage_report_uri(cfg.root, train.leakage_source, uris)
    write_leakage_report(rep, report)
    levels = tuple(train.leakage_levels)
    leaked = {u: sorted(rep.keys(u, levels)) for u in uris}
    n = sum(map(len, leaked.values()))
    if not n:
        return uris
    if train.leakage == "refuse":
        raise ValueError(f"{n} samples show images of the evaluation source {train.leakage_source} "
                         f"({', '.join(levels)}): not trained; report: {report} (train.leakage: drop trains without them)")
    from store.shard_filter import filter_shard_set

    out = []
    for u in uris:
        if not leaked[u]:
            out.append(u)
            continue
        digest = hashlib.sha256("\n".join(leaked[u]).encode()).hexdigest()[:12]
        kept = ShardFiles(u).without_leaks(digest)
        if storage.read_marker(kept) is None:
            filter_shard_set(u, kept, "not (key in (" + ", ".join(f"'{k}'" for k in leaked[u]) + "))")
        print(f"{u}: {len(leaked[u])} leaked samples dropped -> {kept} (report {report})")
        out.append(kept)
    return out
