"""Style features per catalog slice, and their buckets across the corpus: what the style stage's units read.

    <root>/synth/style_features/part-NNNNN-<digest>/features.parquet   one slice's style features
    <root>/synth/style_buckets/...                                      every image in one style bucket

`StyleFeaturesStage`: items are catalog slices of `synthesis.style.partition_size` images; every image is read
(`synthesis.fraction` does not apply: a style family is found only when seen whole) and only its feature
vector is kept (mining/style/features.py), with its catalog record. Counts: images = read + skipped by reason.
`StyleBucketsStage` (stages/synthesis/buckets.py): a spherical K-means quantiser over the style features
(less their mean), fitted on a sample, puts every image in one bucket of about `style.bucket_images`: a
style family is one tight cluster of style features, so it lands in one bucket wherever its images sit in
the catalog (one on a bucket boundary may be cut in two, each part a set when it keeps `style.min_set`).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from mining.style.features import make_style_extractor
from runtime.stage import ItemReport
from schemas.records import ImageRecord
from schemas.layout import RunLayout, SynthFiles
from stages.synthesis.buckets import BucketsStage
from stages.synthesis.parts import PartStage, check_sum, count_reasons, load_source
from store import storage

FEATURES = SynthFiles.FEATURES


def style_extractor(cfg):
    s = cfg.synthesis
    return make_style_extractor(s.style.extractor, cfg.models_dir, seed=s.seed, sha256=s.style.vgg_sha256)


def style_ranges(cfg) -> list[tuple[int, int]]:
    """Catalog row ranges of `style.partition_size` images, cut within each ingest generation, up to
    `synthesis.max_images`."""
    from stages.corpus.embed import partition_ranges
    from stages.corpus.ingest import catalog_generations

    cap = cfg.synthesis.max_images
    ranges = partition_ranges(catalog_generations(cfg.root), cfg.synthesis.style.partition_size)
    return [(lo, min(hi, cap) if cap else hi) for lo, hi in ranges if cap is None or lo < cap]


class StyleFeaturesStage(PartStage):
    name = "synth-style-features"
    kind = "style_features"
    table = FEATURES
    model = True
    key, config_section = "style_features", "synthesis.style"

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        self.extractor = style_extractor(cfg)  # config only

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"extractor": [self.extractor.name, self.extractor.version], "seed": s.seed, "max_side": s.max_side,
                "max_images": s.max_images, "partition_size": s.style.partition_size}

    def worker_model(self):
        return self.extractor

    def setup(self) -> None:
        self.extractor.setup()

    def _ranges(self) -> list[tuple[int, int]]:
        if getattr(self, "_range_cache", None) is None:
            self._range_cache = style_ranges(self.cfg)
        return self._range_cache

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    def run(self, k: int) -> ItemReport:
        from stages.corpus.ingest import catalog_slice

        part = self.parts()[k]
        lo, hi = self._ranges()[k]
        recs = catalog_slice(self.cfg.root, lo, hi)
        skipped: Counter[str] = Counter()
        rows = []
        for rec in recs:  # one image in memory at a time: only its feature vector is kept
            img, why = load_source(rec, self.cfg)
            if img is None:
                skipped[why] += 1
                continue
            rows.append({"source_id": rec.id, "record": rec.model_dump_json(),
                         "feature": np.asarray(self.extractor([img])[0], np.float32).tolist()})
        counts = {"images": len(recs), "read": len(rows), "skipped": count_reasons(skipped)}
        self.reconcile(counts)
        table = pa.Table.from_pylist(rows, schema=pa.schema([("source_id", pa.string()), ("record", pa.string()),
                                                             ("feature", pa.list_(pa.float32()))]))
        storage.atomic_write_parquet(storage.join(part, FEATURES), table)
        storage.write_marker(part, {"counts": counts})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["read"] + sum(c["skipped"].values()), "images")


class StyleBucketsStage(BucketsStage):
    name = "synth-style-buckets"
    kind = "style_buckets"
    needs = ("synth-style-features",)
    key, config_section = "style_buckets", "synthesis.style"
    source_table, vector, source_count = FEATURES, "feature", "read"
    carried = ("source_id", "record")
    stored_unit = False  # the style stage compares the extractor's own vectors

    @property
    def source_dir(self) -> str:
        return self.layout.synth(StyleFeaturesStage.kind)

    def bucketing(self) -> dict:
        st = self.cfg.synthesis.style
        return {"bucket_rows": st.bucket_images, "fit_sample": st.fit_sample, "spill": 0.0, "max_extra": 0}


def slice_features(cfg, name: str) -> tuple[list, np.ndarray]:
    """One style-features part: its catalog records and feature vectors, in catalog order."""
    t = storage.read_parquet(storage.join(RunLayout(cfg.root).synth(StyleFeaturesStage.kind), name, FEATURES))
    recs = [ImageRecord.model_validate(json.loads(r)) for r in t.column("record").to_pylist()]
    x = np.asarray(t.column("feature").to_pylist(), np.float32).reshape(t.num_rows, -1) if t.num_rows else \
        np.zeros((0, 1), np.float32)
    return recs, x

