"""The mining stages called directly in one process, without Prefect or Ray: embed -> cluster -> mine
pairs per preset -> instructions -> pack. The same stage functions the flows' tasks call, with the same
markers; the baseline of bench/orchestration_overhead.py, and handy in a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flows.progress import progress_bar
from mining.embedders import make_embedder
from mining.instructions import InstructionWriter
from mining.pair_classifier import PairClassifier
from mining.presets import preset as get_preset
from schemas.config import RunConfig
from schemas.records import Generator
from tasks import storage
from tasks.cluster import cluster_embeddings, load_assignments
from tasks.embed import embed_catalog, load_embeddings
from tasks.ingest import load_catalog
from tasks.instruct import instruct_pairs, load_instructed, pair_samples
from tasks.mine_pairs import MineReport, load_pairs, mine_pairs
from tasks.shards import ShardSetReport, write_shard_set


@dataclass
class MiningResult:
    embedder: str
    embeddings_uri: str
    clusters_uri: str
    mined: dict[str, MineReport] = field(default_factory=dict)
    instructions: dict[str, dict[str, int]] = field(default_factory=dict)
    shards: dict[str, ShardSetReport] = field(default_factory=dict)


def run_mining(cfg: RunConfig, writer: InstructionWriter | None = None, shard_prefix: str = "mined") -> MiningResult:
    catalog = load_catalog(cfg.root)
    by_id = {r.id: r for r in catalog}
    mc = cfg.mining
    embedder = make_embedder(mc.embedder, cfg.models_dir)
    with progress_bar(f"embed ({embedder.name})", total=len(catalog)) as (_, advance):
        emb_uri = embed_catalog(catalog, cfg.root, embedder, partition_size=mc.partition_size,
                                ingest_cfg=cfg.ingest, progress=advance)
    ids, x, marker = load_embeddings(emb_uri)
    cl_uri = cluster_embeddings(ids, x, cfg.root, emb_uri, mc)
    assignments = load_assignments(cl_uri)
    classifier = PairClassifier(Path(cfg.models_dir) / mc.pair_classifier if mc.pair_classifier else None)
    emb_gen = Generator(name=marker["embedder"], version=marker["version"])
    res = MiningResult(marker["embedder"], emb_uri, cl_uri)
    for name in mc.presets:
        preset = get_preset(name)
        with progress_bar(f"mine {name}", total=len(ids)) as (_, advance):
            rep = mine_pairs(ids, x, assignments, cfg.root, preset, mc, emb_gen, tuple(marker["band"]),
                             classifier, progress=advance)
        res.mined[name] = rep
        if writer is None:
            continue
        pairs = load_pairs(rep.uri)
        with progress_bar(f"instructions {name}", total=len(pairs)) as (_, advance):
            ins_uri, counts = instruct_pairs(pairs, writer, by_id, rep.uri, cfg.ingest, progress=advance)
        res.instructions[name] = counts
        shard_uri = storage.join(cfg.root, "shards", f"{shard_prefix}-{name}")
        with progress_bar(f"pack {name}", total=counts.get("with_instruction", 0)) as (_, advance):
            res.shards[name] = write_shard_set(pair_samples(load_instructed(ins_uri), by_id, cfg.ingest),
                                               shard_uri, cfg.shards, progress=advance)
    return res
