"""AceSamples from the demo corpus' ground truth: each (base -> variant) pair of a family, with the
instruction of the known transformation that made the variant.

Until pair mining lands these are the demo's training samples; their lineage names the ground truth as
the generator, so nothing downstream can mistake them for mined pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mining.decode import normalized_bytes
from schemas.config import IngestConfig
from schemas.records import AceSample, ConditionUnit, Generator, ImageRecord, Lineage, Role
from tasks.demo_corpus import load_ground_truth
from tasks.sources import read_uri

GROUND_TRUTH_GENERATOR = Generator(name="demo-ground-truth", version="1")


def demo_pair_samples(corpus_dir: str | Path, catalog: list[ImageRecord],
                      cfg: IngestConfig | None = None) -> Iterator[AceSample]:
    """One general-editing sample per family member that has an instruction and made it into the catalog."""
    cfg = cfg or IngestConfig()
    corpus = Path(corpus_dir).resolve()
    gt = load_ground_truth(corpus)
    by_uri = {str(Path(r.uri).resolve()): r for r in catalog if "#" not in r.uri}

    def unit(rec: ImageRecord, role: Role) -> ConditionUnit:
        data, ext = normalized_bytes(read_uri(rec.uri), max_pixels=cfg.max_pixels, min_side=cfg.min_side)
        return ConditionUnit(role=role, image=data, image_ext=ext)

    for family, members in sorted(gt["families"].items()):
        base = by_uri.get(str(corpus / members[0]["file"]))
        if base is None:
            continue
        base_unit = unit(base, Role.EDIT)
        for m in members[1:]:
            rec = by_uri.get(str(corpus / m["file"]))
            if rec is None or not m["instruction"]:
                continue
            yield AceSample(
                key=f"{family}-{m['transform']}",
                task="general_editing",
                instruction=m["instruction"],
                units=[base_unit],
                target=unit(rec, Role.TARGET),
                lineage=Lineage(
                    source_ids=[base.id, rec.id],
                    generators=[GROUND_TRUTH_GENERATOR, Generator(name=f"transform:{m['transform']}", version="1")],
                ),
            )
