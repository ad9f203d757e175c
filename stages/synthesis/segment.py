"""Segment catalog images and filter the masks (ACE App. B.5.2): <root>/synth/segments/.

One item per `synthesis.partition_size` catalog rows; a model stage (each worker loads the segmenter once,
a GPU each where there are GPUs). A part's regions.parquet holds every candidate mask: the kept ones with
their mask (PNG), the dropped ones with their reason. Counts reconcile per part and for the stage:
images = segmented + skipped by reason; regions = kept + dropped by reason.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from mining.image.decode import encode_mask
from mining.objects.mask_filters import filter_masks
from mining.objects.segment import SamSegmenter, WithPeople, make_segmenter
from schemas.layout import SynthFiles
from schemas.records import Generator
from store import storage
from runtime.stage import ItemReport
from stages.synthesis.parts import PartStage, check_sum, count_reasons, load_source

REGIONS = SynthFiles.REGIONS
REGION_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("region", pa.int32()), ("score", pa.float32()), ("area_frac", pa.float32()),
    ("box_fill", pa.float32()), ("box", pa.list_(pa.int32())), ("kept", pa.bool_()), ("reason", pa.string()),
    ("mask_png", pa.binary()),  # kept masks only: full image size, 255 = the object
    ("objectness", pa.float32()),  # mining/objects/objectness.py; null where not computed (failed a shape check first)
    ("label", pa.string()),  # the open-vocabulary detector's label (null without one)
    ("label_score", pa.float32()),  # its detection score
])


def segmenter_for(cfg):
    """The configured segmenter; with `synthesis.people` (auto: when MediaPipe's files are present) the
    selfie segmenter's person mask joins its regions."""
    from mining.models.mediapipe import PersonSegmenter, mediapipe_dir

    s = cfg.synthesis
    seg = make_segmenter(s.segmenter, cfg.models_dir, s.sam_variant, points_per_side=s.sam_points_per_side)
    seg = grounded(cfg, seg)
    if s.people == "off" or (s.people == "auto" and not (mediapipe_dir(cfg.models_dir) /
                                                          "selfie_segmentation.tflite").is_file()):
        return seg
    return WithPeople(seg, PersonSegmenter(cfg.models_dir))


def grounded(cfg, seg):
    """With an open-vocabulary detector (`synthesis.object_detector`) and SAM, the detector's boxes prompt SAM
    and each region carries its label; else `seg` as it is (auto)."""
    from mining.objects.detect import GroundedSegmenter, make_detector
    from mining.objects.names import VOCABULARY

    s = cfg.synthesis
    det = make_detector(s.object_detector, cfg.models_dir, s.object_vocabulary or VOCABULARY,
                        s.object_detector_threshold)
    if det is None:
        return seg
    if not isinstance(seg, SamSegmenter):
        if s.object_detector == "owlv2":
            raise ValueError("synthesis.object_detector owlv2 needs SAM to segment its boxes: put the SAM "
                             "checkpoint in models_dir/sam (`aceforge models pull sam-vit_b`) or set segmenter sam")
        return seg
    return GroundedSegmenter(det, seg)


class SegmentStage(PartStage):
    name = "synth-segment"
    kind = "segments"
    key, config_section, ui_report = "segment", "synthesis", "counts"
    table = REGIONS
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        self.segmenter = segmenter_for(cfg)  # cheap: config only

    @property
    def generator(self) -> Generator:
        return Generator(name=self.segmenter.name, version=self.segmenter.version)

    def inputs(self) -> list[str]:
        return [self.layout.catalog]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"segmenter": [self.segmenter.name, self.segmenter.version], "max_side": s.max_side,
                "points_per_side": s.sam_points_per_side, "filters": s.filters.model_dump(),
                "max_images": s.max_images, "fraction": s.fraction, "partition_size": s.partition_size,
                **({"detector_threshold": s.object_detector_threshold} if "detector:" in self.segmenter.name else {})}

    def worker_model(self):
        return self.segmenter

    def setup(self) -> None:
        self.segmenter.setup()

    def item_key(self, k: int) -> str:
        return self.catalog_key(k)

    def run(self, k: int) -> ItemReport:
        part = self.parts()[k]
        recs = self.catalog_records(k)
        skipped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        rows: list[dict] = []
        segmented = kept = proposed = 0
        for rec in recs:
            img, reason = load_source(rec, self.cfg)
            if img is None:
                skipped[reason] += 1
                continue
            segmented += 1
            regions = self.segmenter(img)
            proposed += len(regions)  # what the segmenter gave: every one must be a row, kept or dropped
            res = filter_masks(regions, self.cfg.synthesis.filters, img)
            for i, (r, st) in enumerate(res.kept):
                rows.append({"image_id": rec.id, "region": i, "score": r.score, "area_frac": st.area_frac,
                             "box_fill": st.box_fill, "box": list(st.box), "kept": True, "reason": None,
                             "mask_png": encode_mask(r.mask), "objectness": st.objectness, "label": r.label,
                             "label_score": r.label_score})
            for j, (r, st, why) in enumerate(res.dropped):
                rows.append({"image_id": rec.id, "region": len(res.kept) + j, "score": r.score,
                             "area_frac": st.area_frac if st else 0.0, "box_fill": st.box_fill if st else 0.0,
                             "box": list(st.box) if st else None, "kept": False, "reason": why, "mask_png": None,
                             "objectness": st.objectness if st else None, "label": r.label,
                             "label_score": r.label_score})
            kept += len(res.kept)
            dropped.update(res.drops)
        counts = {"images": len(recs), "segmented": segmented, "skipped": count_reasons(skipped),
                  "regions": proposed, "kept": kept, "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        check_sum(self.label, proposed, len(rows), "regions written")
        table = pa.Table.from_pylist(rows, schema=REGION_SCHEMA).replace_schema_metadata(
            {b"segmenter": self.segmenter.name.encode(), b"segmenter_version": self.segmenter.version.encode()})
        storage.atomic_write_parquet(storage.join(part, REGIONS), table)
        storage.write_marker(part, {"counts": counts})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["images"], c["segmented"] + sum(c["skipped"].values()), "images")
        check_sum(self.label, c["regions"], c["kept"] + sum(c["dropped"].values()), "regions")
