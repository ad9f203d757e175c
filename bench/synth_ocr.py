"""OCR throughput on the demo photos: the bare library call (`RapidOCR()(img)`) beside this project's reader,
then the text stage on the demo's budget (its removal and render paths), with every text-removed image
checked by OCR again.

    python bench/synth_ocr.py [--side 384] [--out /tmp/bench-ocr] [--rounds 3]

The bare call and the reader run interleaved for --rounds rounds after one warm-up call each; rates are of the
best runs (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import interleave, ratio  # noqa: E402


def _images(corpus: Path, side: int) -> list[np.ndarray]:
    files = sorted(corpus.glob("captions/*.png")) + sorted(corpus.glob("photos/*/base.png"))
    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        im.thumbnail((side, side))
        out.append(np.asarray(im))
    return out


def _compare(bare, ours, images, rounds: int):
    """Interleaved timings of both over `images` (each warmed up on one image first); each run's result is the
    number of images where it found text."""
    bare(images[0])
    ours(images[0])
    return interleave([("bare", lambda: sum(bool(bare(im)) for im in images)),
                       ("ours", lambda: sum(bool(ours(im)) for im in images))], rounds=rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    a = ap.parse_args()
    import logging

    from rapidocr import RapidOCR

    from flows.demo import DEMO_SYNTHESIS
    from mining.text.ocr import RapidOcrReader
    from schemas.config import RunConfig
    from stages.corpus.demo_corpus import build_demo_corpus
    from runtime.executors import LocalExecutor
    from stages.corpus.ingest import ingest
    from store.shard_reader import read_shard_set
    from stages.synthesis.pack import SynthPackStage
    from stages.synthesis.text import TextStage

    out = Path(a.out or tempfile.mkdtemp(prefix="bench-ocr-"))
    corpus = out / "corpus"
    build_demo_corpus(corpus)
    images = _images(corpus, a.side)
    bare = RapidOCR(params={"Global.log_level": "error"})
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    reader = RapidOcrReader()
    reader.setup()
    t = _compare(lambda im: bare(im).txts, reader, images, a.rounds)
    n = len(images)
    print(f"{n} demo photos at <= {a.side} px; {a.rounds} interleaved rounds, rates of the best runs "
          f"(medians {n / t['bare'].median:.2f} and {n / t['ours'].median:.2f} images/s)")
    print(f"  bare RapidOCR()(img)      {n / t['bare'].best:6.2f} images/s   {t['bare'].result} with any text")
    print(f"  RapidOcrReader (wrapper)  {n / t['ours'].best:6.2f} images/s   {t['ours'].result} with text "
          f"(>= 2 chars, score >= 0.5); {ratio(t, 'ours', 'bare'):.2f}x the bare call's time")

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
