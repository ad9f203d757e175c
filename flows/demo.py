"""The demo job on the embedded default: build the demo corpus, ingest it, mine pairs (embed, cluster,
band union-find), give the pairs whose transformation is known their instruction, write a shard set, then
a few Ray Train steps of the toy FLUX.1-Fill model with checkpoints and both LoRA exports.

Synthesis stages join here as they land.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from flows.mining import MiningResult, run_mining
from flows.progress import progress_bar
from mining.instructions import KnownTransformWriter
from schemas.config import RunConfig, TrainConfig
from tasks import storage
from tasks.demo_corpus import build_demo_corpus, load_ground_truth
from tasks.ingest import IngestReport, ingest, load_catalog
from flows.training import train_on_shards
from trainer.ray_job import TrainResult

DEMO_SHARD_PREFIX = "demo"
# a few steps of the toy model: enough to show checkpoints, metrics and both exports
DEMO_TRAIN = TrainConfig(base="tiny", max_steps=4, checkpoint_every=2, max_tokens=256, lora_rank=8,
                         max_sequence_length=64, num_workers=1, run_name="demo")


@dataclass
class FamilyRecovery:
    families: int
    recovered: int  # families that came back as exactly one set
    impure_sets: int  # sets that mix two families


@dataclass
class DemoResult:
    corpus: Path
    ingest: IngestReport
    mining: MiningResult
    recovery: FamilyRecovery
    training: TrainResult


def _family_ids(corpus: Path, root: str) -> dict[str, str]:
    """catalog id -> family name, for every family member that was accepted."""
    gt = load_ground_truth(corpus)
    by_path = {str(Path(r.uri).resolve()): r.id for r in load_catalog(root)}
    out = {}
    for fam, members in gt["families"].items():
        for m in members:
            rid = by_path.get(str((corpus / m["file"]).resolve()))
            if rid:
                out[rid] = fam
    return out


def known_writer(corpus: Path, root: str) -> KnownTransformWriter:
    gt = load_ground_truth(corpus)
    by_path = {str(Path(r.uri).resolve()): r.id for r in load_catalog(root)}
    known = {}
    for members in gt["families"].values():
        base = by_path.get(str((corpus / members[0]["file"]).resolve()))
        for m in members[1:]:
            var = by_path.get(str((corpus / m["file"]).resolve()))
            if base and var and m["instruction"]:
                known[(base, var)] = m["instruction"]
    return KnownTransformWriter(known)


def family_recovery(corpus: Path, root: str, preset: str) -> FamilyRecovery:
    fam_of = _family_ids(corpus, root)
    sets = storage.read_parquet(storage.join(root, "pairs", preset, "sets.parquet")).to_pylist()
    members: dict[tuple[int, int], set[str]] = defaultdict(set)
    for row in sets:
        members[(row["cluster"], row["set_id"])].add(row["id"])
    fam_members: dict[str, set[str]] = defaultdict(set)
    for rid, fam in fam_of.items():
        fam_members[fam].add(rid)
    found = {frozenset(m) for m in members.values()}
    recovered = sum(frozenset(m) in found for m in fam_members.values())
    impure = sum(len({fam_of.get(i, i) for i in m}) > 1 for m in members.values())
    return FamilyRecovery(len(fam_members), recovered, impure)


def run_demo(out: str | Path, cfg: RunConfig | None = None) -> DemoResult:
    out = Path(out).resolve()
    cfg = cfg or RunConfig(root=str(out / "root"))
    corpus = out / "corpus"
    build_demo_corpus(corpus, cfg.demo)
    fs, root_path = storage.fs_path(cfg.root)
    if fs.exists(root_path):
        fs.rm(root_path, recursive=True)  # the corpus was rebuilt: everything derived from it is rebuilt too
    with progress_bar("ingest") as (total, advance):
        report = ingest(str(corpus), cfg.root, cfg.ingest, progress_total=total, progress=advance)
    mining = run_mining(cfg, writer=known_writer(corpus, cfg.root), shard_prefix=DEMO_SHARD_PREFIX)
    recovery = family_recovery(corpus, cfg.root, cfg.mining.presets[0])
    shard_set = mining.shards[cfg.mining.presets[0]]
    training = train_on_shards(cfg, shard_set.uri)
    return DemoResult(corpus, report, mining, recovery, training)
