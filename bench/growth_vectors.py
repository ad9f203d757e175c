"""The embedding-level half of bench/growth.py: K-means, mining, instructions (template writer) and packing of
pairs over n synthetic vectors, on the Prefect-over-Ray executor, with the same figures per stage.

The run root gets a catalog of n rows (ids unique; their files cycle over a pool of generated images, so
packing reads real bytes; a family's rows are copies of one image in other brightness and colour) and embedding partitions written by the embed stage's own writer in its layout,
with both markers stamped as the stages would. Mining runs without the geometric check (a row's file is a pool
image unrelated to its vector). The vectors are unit vectors around n/50 random centres
(K-means has clusters to find); `family_share` of them come in families of four whose cosines fall inside
the band (mining has pairs to find: about 1.5 pairs per family member), the rest are spread wide.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

EMBEDDER = "siglip"  # its layout and band; nothing loads its weights here
DIM = 768
POOL = 256  # distinct image files the catalog rows cycle over
FAMILY = 4


def synthetic_vectors(n: int, dim: int, seed: int, family_share: float) -> np.ndarray:
    """n unit float32 vectors: members of one family are ~0.9 cosine apart, the others far from all."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim), dtype=np.float32) * 2.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fam = int(n * family_share) // FAMILY * FAMILY
    if fam:
        heads = x[:fam:FAMILY]
        noise = rng.standard_normal((fam, dim), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        x[:fam] = np.repeat(heads, FAMILY, axis=0) + noise * 0.35  # pairwise cosine ~0.89
        x[:fam] /= np.linalg.norm(x[:fam], axis=1, keepdims=True)
    return x


def family_pool(pool: list[Path], out: Path) -> list[list[Path]]:
    """Per pool image, FAMILY copies differing in brightness and colour only: a family's rows show one subject
    (the supervision gate's coherence check) and differ (its no-change check)."""
    from PIL import Image, ImageEnhance

    out.mkdir(parents=True, exist_ok=True)
    groups = []
    for i, p in enumerate(pool):
        paths = [out / f"{i:04d}-{j}.jpg" for j in range(FAMILY)]
        if not paths[-1].exists():
            with Image.open(p) as im:
                im = im.convert("RGB")
                for j, q in enumerate(paths):
                    edit = ImageEnhance.Brightness(im).enhance(0.6 + 0.25 * j)
                    ImageEnhance.Color(edit).enhance(1.5 - 0.3 * j).save(q, quality=92)
        groups.append(paths)
    return groups


def write_corpus(root: str, n: int, pool: list[Path], partition: int, family_share: float, seed: int = 0,
                 families: list[list[Path]] | None = None) -> None:
    """The catalog and the embeddings of n synthetic images, markers stamped as ingest and embed would. The
    rows of family f are the copies of `families[f % len(families)]` (else they cycle over the pool too)."""
    import pyarrow as pa
    from PIL import Image

    from mining.models.embedders import make_embedder
    from schemas.arrow import IMAGE_RECORD_SCHEMA
    from schemas.config import RunConfig
    from schemas.layout import CatalogFiles, RunLayout
    from stages.corpus.embed import EmbedStage, finalize_embeddings, write_partition
    from stages.corpus.ingest import IngestStage
    from store import storage

    cfg = RunConfig(root=root, mining={"embedder": EMBEDDER, "partition_size": partition})
    lay = RunLayout(root)
    size_of: dict[Path, tuple[int, int]] = {}
    for p in pool:
        with Image.open(p) as im:
            size_of[p] = im.size
    ids = [hashlib.sha256(f"growth-{seed}-{i}".encode()).hexdigest() for i in range(n)]
    ids.sort()  # the catalog's rows are in id order within a generation, as ingest leaves them
    fam = int(n * family_share) // FAMILY * FAMILY
    files = [pool[i % len(pool)] for i in range(n)]
    if families:
        for i in range(fam):
            files[i] = families[(i // FAMILY) % len(families)][i % FAMILY]
    for f in set(files[:fam]) - set(pool):
        with Image.open(f) as im:
            size_of[f] = im.size
    with storage.ParquetSink(CatalogFiles(lay.catalog).images, IMAGE_RECORD_SCHEMA) as out:
        for lo in range(0, n, 65536):
            rows = range(lo, min(n, lo + 65536))
            out.write(pa.table({"id": [ids[i] for i in rows], "uri": [str(files[i]) for i in rows],
                                "width": [size_of[files[i]][0] for i in rows],
                                "height": [size_of[files[i]][1] for i in rows],
                                "format": ["JPEG"] * len(rows), "mode": ["RGB"] * len(rows),
                                "source": [str(pool[0].parent)] * len(rows), "nbytes": [0] * len(rows)},
                               schema=IMAGE_RECORD_SCHEMA))
    counts = {"seen": n, "accepted": n, "duplicates": 0, "quarantined": {}, "skipped": {}}
    storage.write_marker(lay.catalog, {"fingerprint": {"source": str(pool[0].parent), "config": "synthetic"},
                                       "counts": counts, "partitions": 1,
                                       "generations": [{"partitions": 1, "rows": n, "ids": "synthetic"}]})
    IngestStage(cfg, source=str(pool[0].parent)).stamp(lay.catalog)
    emb = make_embedder(EMBEDDER, cfg.models_dir)
    x = synthetic_vectors(n, DIM, seed, family_share)
    out_uri = lay.embeddings(emb.name)
    parts = 0
    for k, lo in enumerate(range(0, n, partition)):
        hi = min(n, lo + partition)
        write_partition(lay.embedding_part(emb.name, k), ids[lo:hi], x[lo:hi], emb.name, emb.version, {}, hi - lo)
        parts += 1
    finalize_embeddings(out_uri, parts, n, tuple(emb.band))
    EmbedStage(cfg).stamp(out_uri)


def run_vectors(n: int, cache: Path, keep: bool, family_share: float = 0.02, partition: int = 4096,
                k: int | None = None, batch_rows: int | None = None, layout_rows: int | None = None) -> dict[str, dict]:
    """{stage label: figures} of K-means, mining, instructions and packing over n synthetic vectors."""
    from prefect import flow

    from bench.growth import _corpus, _fmt, FIGURES, stage_row
    from runtime.executors import PrefectRayExecutor
    from schemas.config import RunConfig
    from stages.corpus.cluster import cluster_stages
    from stages.pairs.instruct import InstructStage
    from stages.pairs.mine import MineStage
    from stages.pairs.pack import PackStage

    pool = sorted(_corpus(cache, POOL).glob("*.jpg"))[:POOL]
    root = tempfile.mkdtemp(prefix=f"growth-vectors-{n}-", dir=cache)
    t0 = time.perf_counter()
    write_corpus(root, n, pool, partition, family_share, families=family_pool(pool, cache / "growth-families"))
    print(f"{n:>8} vectors: catalog and embeddings written in {time.perf_counter() - t0:.0f} s", flush=True)
    # the rows' files are unrelated pool images: the geometric check would refuse every mined pair
    cfg = RunConfig(root=root, mining={"embedder": EMBEDDER, "partition_size": partition, "geometric_check": False,
                                              "k": k, **({"batch_rows": batch_rows} if batch_rows else {}),
                                              **({"layout_rows": layout_rows} if layout_rows else {})})
    preset = "general_editing"
    stages = [*cluster_stages(cfg), MineStage(cfg, preset=preset),
              InstructStage(cfg, preset=preset, writer={"kind": "template"}),
              PackStage(cfg, preset=preset, shard_name=f"growth-{preset}")]
    rows: dict[str, dict] = {}

    @flow(name="aceforge-growth-vectors", log_prints=True)
    def vectors_flow() -> None:
        executor = PrefectRayExecutor(cfg.orchestration.items_in_flight, cfg.orchestration.embed_actors)
        try:
            for st in stages:
                t = time.perf_counter()
                rep = executor.run(st)
                row = stage_row(n, rep.execution, time.perf_counter() - t)
                if row is not None:
                    rows[st.label] = row
                    print(f"{n:>8} {st.label:<34} " + "  ".join(f"{k} {_fmt(row[k])}" for k in FIGURES)
                          + f"  {_short(rep.counts)}", flush=True)
        finally:
            executor.close()

    try:
        vectors_flow()
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _short(counts: dict) -> str:
    keys = ("k", "points", "policy", "clusters", "pairs", "with_instruction", "samples", "shards")
    return ", ".join(f"{k}={counts[k]}" for k in keys if k in counts)
