"""Style sets across catalog slices: a planted style family whose images sit in different slices is one set."""

import json

import skimage.data
from PIL import Image

from mining.style.sets import tight_sets
from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from stages.corpus.demo_corpus import style_family
from stages.corpus.ingest import ingest, load_catalog
from stages.synthesis.chain_records import iter_chain_records
from stages.synthesis.style import StyleStage
from stages.synthesis.style_features import StyleBucketsStage, StyleFeaturesStage, slice_features
from store import storage


def test_a_style_family_split_across_catalog_slices_is_found_as_one_set(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "horse"):
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        im.thumbnail((112, 112))
        im.save(src / f"{name}.png")
    family_files = style_family(src, 112)
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["style_editing", "style_transfer_reference"], "max_side": 112,
                               "style": {"partition_size": 4}})
    ingest(str(src), cfg.root, cfg.ingest)
    family = {r.id for r in load_catalog(cfg.root) if "/styles/" in r.uri}
    assert len(family) == len(family_files) >= 4
    ex = LocalExecutor()
    feats = ex.run(StyleFeaturesStage(cfg))
    buckets = ex.run(StyleBucketsStage(cfg))
    style = ex.run(StyleStage(cfg))
    st = cfg.synthesis.style
    # the family is spread over the 4-image catalog slices: no slice holds a set of it (what per-slice search saw)
    names = storage.read_marker(StyleFeaturesStage(cfg).out)["parts"]
    assert len(names) >= 3 and feats.counts["read"] == len(load_catalog(cfg.root))
    per_slice = []
    for name in names:
        recs, x = slice_features(cfg, name)
        per_slice.append(sum(r.id in family for r in recs))
        for members in tight_sets(x, st.threshold, st.pair_min, st.min_set, st.max_sets_tried):
            assert sum(recs[i].id in family for i in members) < len(family)
    assert max(per_slice) < len(family) and sum(n > 0 for n in per_slice) >= 2
    # across the corpus: one set, the whole family, its bank style found, pairs made
    c = style.counts
    assert buckets.counts["rows"] == c["members"] == feats.counts["read"]
    assert c["style_sets_used"] == 1 and c["style_set"] == len(family)
    assert c["pairs"] > 0 and c["contents"] == c["pairs"] + sum(c["dropped"].values())
    for rec in iter_chain_records(style.outputs[0]):
        content, ref = json.loads(rec["source_ids"])
        assert ref in family and content not in family
        assert json.loads(rec["labels"])["style"] == "poster"
        assert json.loads(rec["scores"])["style_set_size"] == float(len(family))
