"""OCR throughput on the demo photos: the bare library call (`RapidOCR()(img)`) beside this project's reader,
then the text stage on the demo's budget (its removal and render paths), with every text-removed image
checked by OCR again.

    python bench/synth_ocr.py [--side 384] [--out /tmp/bench-ocr]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _images(corpus: Path, side: int) -> list[np.ndarray]:
    files = sorted(corpus.glob("captions/*.png")) + sorted(corpus.glob("photos/*/base.png"))
    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        im.thumbnail((side, side))
        out.append(np.asarray(im))
    return out


def _rate(fn, images) -> tuple[float, int]:
    fn(images[0])  # warm-up
    t = time.perf_counter()
    found = sum(bool(fn(im)) for im in images)
    return len(images) / (time.perf_counter() - t), found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import logging

    from rapidocr import RapidOCR

    from flows.demo import DEMO_SYNTHESIS
    from mining.ocr import RapidOcrReader
    from schemas.config import RunConfig
    from tasks.demo_corpus import build_demo_corpus
    from tasks.executors import LocalExecutor
    from tasks.ingest import ingest
    from tasks.shard_reader import read_shard_set
    from tasks.synth_pack import SynthPackStage
    from tasks.synth_text import TextStage

    out = Path(a.out or tempfile.mkdtemp(prefix="bench-ocr-"))
    corpus = out / "corpus"
    build_demo_corpus(corpus)
    images = _images(corpus, a.side)
    bare = RapidOCR(params={"Global.log_level": "error"})
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    reader = RapidOcrReader()
    reader.setup()
    r_bare, f_bare = _rate(lambda im: bare(im).txts, images)
    r_ours, f_ours = _rate(reader, images)
    print(f"{len(images)} demo photos at <= {a.side} px")
    print(f"  bare RapidOCR()(img)      {r_bare:6.2f} images/s   {f_bare} with any text")
    print(f"  RapidOcrReader (wrapper)  {r_ours:6.2f} images/s   {f_ours} with text (>= 2 chars, score >= 0.5)")

    cfg = RunConfig(root=str(out / "root"), models_dir=str(out / "models"),
                    synthesis=DEMO_SYNTHESIS.model_copy(update={"tasks": ["text_removal", "text_addition"]}))
    ingest(str(corpus), cfg.root, cfg.ingest)
    ex = LocalExecutor()
    t = time.perf_counter()
    rep = ex.run(TextStage(cfg))
    dt = time.perf_counter() - t
    c = rep.counts
    print(f"text stage (demo budget): {c['read']} images in {dt:.1f} s = {c['read'] / dt:.2f} images/s; "
          f"with text {c['with_text']}, without {c['without_text']}; samples {c['samples']}; dropped {c['dropped']}")
    pack = ex.run(SynthPackStage(cfg, shard_name="text"))
    bad = n = 0
    for s in read_shard_set(pack.counts["uri"]):
        if s.task == "text_removal":
            n += 1
            bad += bool(reader(np.asarray(Image.open(__import__("io").BytesIO(s.target.image)).convert("RGB"))))
    print(f"packed {pack.counts['counts_by_task']}; text_removal targets with an OCR detection: {bad} of {n}")


if __name__ == "__main__":
    main()
