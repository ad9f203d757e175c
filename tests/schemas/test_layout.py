from schemas.layout import (FILE_SETS, CatalogFiles, CheckpointFiles, ClusterFiles, DemoFiles, EmbeddingFiles,
                            ExportFiles, PairFiles, RunFiles, RunLayout, ShardFiles, SynthFiles)
from store import storage


def test_every_path_is_under_the_root_and_names_are_made_safe():
    lay = RunLayout("s3://bucket/run")
    paths = [lay.catalog, lay.ingest_plan, lay.ingest_part(3, "images"), lay.embeddings("ViT B/16 (SigLIP)"),
             lay.embedding_part("e", 2), lay.clusters("e"), lay.pairs("p"), lay.pair_batch("p", 1),
             lay.instructed("p"), lay.synth("object_removal"), lay.shards("s"), lay.checkpoints("r"),
             lay.exports("r"), lay.cache("instructions"), lay.lock, lay.models("m"), lay.announced("x")]
    assert all(p.startswith("s3://bucket/run/") for p in paths) and len(set(paths)) == len(paths)
    assert lay.embeddings("ViT B/16 (SigLIP)") == "s3://bucket/run/embeddings/ViT_B_16_SigLIP_"
    assert lay.ingest_part(3, "images") == "s3://bucket/run/catalog/parts/part-00003.images.parquet"
    assert RunLayout.marker(lay.shards("s")) == "s3://bucket/run/shards/s/_SUCCESS.json"


def test_the_spellings_runs_already_wrote_are_kept():
    """Byte for byte what earlier releases wrote: a renamed file would make every finished stage re-run."""
    r = "/data/run"
    lay = RunLayout(r + "/")
    cat = CatalogFiles(lay.catalog)
    assert (cat.images, cat.duplicates, cat.quarantine, cat.plan) == (
        f"{r}/catalog/images.parquet", f"{r}/catalog/duplicates.parquet",
        f"{r}/catalog/quarantine/quarantine.parquet", f"{r}/catalog/plan.json")
    assert CatalogFiles.PART.fullmatch("part-00012.quarantine.parquet")
    assert CatalogFiles.PART.fullmatch("part-00012.hashes.parquet")
    assert cat.dedup(2, 31) == f"{r}/catalog/dedup/gen-0002.bucket-00031.parquet"
    assert CatalogFiles.DEDUP.fullmatch(cat.dedup(2, 31).rsplit("/", 1)[1])
    assert EmbeddingFiles(lay.embeddings("e")).plan == f"{r}/embeddings/e/plan.json"
    cl = ClusterFiles(lay.clusters("e"))
    assert [p.rsplit("/", 1)[1] for p in (cl.fit, cl.centroids, cl.split_log, cl.assignments, cl.vectors, cl.ids,
                                          cl.offsets, cl.digest)] == [
        "fit.json", "centroids.npy", "split_log.json", "assignments.parquet", "vectors.npy", "ids.npy",
        "offsets.npy", "cluster_digest.npy"]
    pf = PairFiles(lay.pairs("p"))
    assert [pf.table(t) for t in ("edges", "sets", "pairs", "groups")] == [
        f"{r}/pairs/p/{t}.parquet" for t in ("edges", "sets", "pairs", "groups")]
    assert (pf.drops, pf.batch(7), pf.instructed, PairFiles(pf.instructed).pairs) == (
        f"{r}/pairs/p/drops.json", f"{r}/pairs/p/batches/batch-00007", f"{r}/pairs/p/instructed",
        f"{r}/pairs/p/instructed/pairs.parquet")
    assert PairFiles.BATCH.fullmatch("batch-00007-0a1b2c3d") and not PairFiles.BATCH.fullmatch("batch-7")
    sy = SynthFiles(lay.synth("face_buckets"))
    assert (sy.quantiser, SynthFiles(lay.synth("face_buckets") + "/part-00000-0a1b2c3d").buckets) == (
        f"{r}/synth/face_buckets/quantiser.parquet", f"{r}/synth/face_buckets/part-00000-0a1b2c3d/buckets.parquet")
    sh = ShardFiles(lay.shards("set"))
    assert (sh.manifest, sh.card, sh.encoded("canvas", 512)) == (
        f"{r}/shards/set/manifest.parquet", f"{r}/shards/set/README.md", f"{r}/shards/set-encoded-canvas-512")
    assert (ShardFiles.tar_name("ace", 3), ShardFiles.stats_name("ace", 3), ShardFiles.tar_pattern("ace") % 3) == (
        "ace-000003.tar", "ace-000003.stats.json", "ace-000003.tar")
    assert lay.announced("demo") == f"{r}/shards/_announced-demo.json"
    run = RunFiles(lay.checkpoints("r1"))
    assert (run.identity, run.metrics, run.metrics_log, run.live, run.eval, run.data, run.counts) == tuple(
        f"{r}/checkpoints/r1/{n}" for n in ("identity.json", "metrics", "metrics.jsonl", "live.json", "eval", "data",
                                            "data-counts"))
    assert (RunFiles.metric_name(12), RunFiles.count_name(1)) == ("step-0000012.json", "rank-00001.json")
    assert CheckpointFiles("c").state == "c/state.json" and ExportFiles(lay.exports("r1")).record == \
        f"{r}/checkpoints/exports/r1/export.json"
    assert lay.lock == f"{r}/.aceforge.lock" and lay.models("tiny-random-flux-fill") == \
        f"{r}/models/tiny-random-flux-fill"
    assert RunLayout.cached_reply(lay.instruction_cache, "abcdef") == f"{r}/cache/instructions/ab/abcdef.json"
    assert (DemoFiles("out").root, DemoFiles("out").ground_truth) == ("out/root", "out/corpus/ground_truth.json")


def test_storage_writes_the_layout_marker(tmp_path):
    storage.write_marker(str(tmp_path), {"a": 1})
    assert (tmp_path / RunLayout.marker("").lstrip("/")).is_file()


def test_every_file_set_names_its_directory_in_the_run_layout():
    for cls in FILE_SETS:
        assert cls.where == "" or hasattr(RunLayout, cls.where), cls.__name__
