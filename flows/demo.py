"""The demo job on the embedded default: build the demo corpus, ingest it, write a shard set.

Later stages (embedding, clustering, pair mining, training) join here as they land.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.progress import progress_bar
from schemas.config import RunConfig
from tasks import storage
from tasks.demo_corpus import build_demo_corpus
from tasks.ingest import IngestReport, ingest, load_catalog
from tasks.pack import demo_pair_samples
from tasks.shards import ShardSetReport, write_shard_set

DEMO_SHARD_SET = "demo-pairs"


@dataclass
class DemoResult:
    corpus: Path
    ingest: IngestReport
    shards: ShardSetReport


def run_demo(out: str | Path, cfg: RunConfig | None = None) -> DemoResult:
    out = Path(out).resolve()
    cfg = cfg or RunConfig(root=str(out / "root"))
    corpus = out / "corpus"
    build_demo_corpus(corpus, cfg.demo)
    with progress_bar("ingest") as (total, advance):
        report = ingest(str(corpus), cfg.root, cfg.ingest, force=True, progress_total=total, progress=advance)
    shard_uri = storage.join(cfg.root, "shards", DEMO_SHARD_SET)
    fs, path = storage.fs_path(shard_uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)  # the corpus was rebuilt: its shard set is rebuilt with it
    catalog = load_catalog(cfg.root)
    with progress_bar("pack shards") as (_, advance):
        shards = write_shard_set(demo_pair_samples(corpus, catalog, cfg.ingest), shard_uri, cfg.shards,
                                 progress=advance)
    return DemoResult(corpus, report, shards)
