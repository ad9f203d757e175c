from tasks.layout import RunLayout


def test_every_path_is_under_the_root_and_names_are_made_safe():
    lay = RunLayout("s3://bucket/run")
    paths = [lay.catalog, lay.ingest_plan, lay.ingest_part(3, "images"), lay.embeddings("ViT B/16 (SigLIP)"),
             lay.embedding_part("e", 2), lay.clusters("e"), lay.pairs("p"), lay.pair_batch("p", 1),
             lay.instructed("p"), lay.synth("object_removal"), lay.shards("s"), lay.checkpoints("r"),
             lay.exports("r"), lay.cache("instructions")]
    assert all(p.startswith("s3://bucket/run/") for p in paths) and len(set(paths)) == len(paths)
    assert lay.embeddings("ViT B/16 (SigLIP)") == "s3://bucket/run/embeddings/ViT_B_16_SigLIP_"
    assert lay.ingest_part(3, "images") == "s3://bucket/run/catalog/parts/part-00003.images.parquet"
    assert RunLayout.marker(lay.shards("s")) == "s3://bucket/run/shards/s/_SUCCESS.json"
