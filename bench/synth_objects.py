"""Object synthesis throughput with the offline models, on the demo photos: images/s per step, beside the
bare library call on the same images.

    python bench/synth_objects.py [--repeat 2] [--rounds 3]

Steps (in this process, one core): segment (the region proposer: Felzenszwalb at three scales of a 256 px
copy, holes filled, duplicates merged, contrast scored) vs one raw skimage `felzenszwalb` call at full
size; filter (ACE B.5.2 checks on every region) vs counting each mask's pixels; inpaint (dilated mask,
cv2 Telea, composited) vs raw `cv2.inpaint` on the same masks; verify (outside, change, seam) vs a bare
outside-equality check (each step and its baseline interleaved for --rounds rounds, rates of the best runs,
bench/_timing.py). Then the four stages end to end through the local executor (decoding, PNG
encoding, parquet, markers) on the demo corpus' first 36 catalog images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import interleave  # noqa: E402


def _photos() -> list[np.ndarray]:
    from stages.corpus.demo_corpus import BASE_PHOTOS, _photo

    return [np.asarray(_photo(load, 384).convert("RGB")) for load in BASE_PHOTOS.values()]


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f}/s" if seconds > 0 else "     inf"


def steps(repeat: int, rounds: int) -> None:
    import cv2
    from skimage.segmentation import felzenszwalb

    from mining.objects.inpaint import Cv2Inpainter, dilate
    from mining.objects.mask_filters import filter_masks
    from mining.objects.segment import RegionProposer
    from mining.objects.verify import verify_removal
    from schemas.config import MaskFilterConfig, VerifyConfig

    images = _photos() * repeat
    seg, inp = RegionProposer(), Cv2Inpainter()
    rows = []

    def pair(ours, base) -> tuple[float, float, object]:
        """(best of ours, best of the baseline, ours' last result), the two interleaved."""
        t = interleave([("baseline", base), ("ours", ours)], rounds=rounds)
        return t["ours"].best, t["baseline"].best, t["ours"].result

    t_seg, t_base, regions = pair(lambda: [seg(im) for im in images],
                                  lambda: [felzenszwalb(im, scale=400, sigma=0.8,
                                                        min_size=im.shape[0] * im.shape[1] // 400) for im in images])
    rows.append(("segment", len(images), t_seg, t_base, "raw felzenszwalb, one scale"))
    t_f, t_base, kept = pair(lambda: [filter_masks(r, MaskFilterConfig()) for r in regions],
                             lambda: [[np.count_nonzero(x.mask) for x in r] for r in regions])
    rows.append(("filter", len(images), t_f, t_base, "count each mask's pixels"))
    jobs = [(im, dilate(k.kept[0][0].mask, 7)) for im, k in zip(images, kept) if k.kept]
    t_i, t_base, outs = pair(lambda: [inp(im, m) for im, m in jobs],
                             lambda: [cv2.inpaint(im, m.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
                                      for im, m in jobs])
    rows.append(("inpaint", len(jobs), t_i, t_base, "raw cv2.inpaint"))
    t_v, t_base, verdicts = pair(lambda: [verify_removal(im, o, m, VerifyConfig())[0]
                                          for (im, m), o in zip(jobs, outs)],
                                 lambda: [np.array_equal(im[~m], o[~m]) for (im, m), o in zip(jobs, outs)])
    rows.append(("verify", len(jobs), t_v, t_base, "outside equality only"))
    print(f"{len(images)} demo photos (longer side 384), {sum(len(r) for r in regions)} regions, "
          f"{sum(len(k.kept) for k in kept)} kept, {len(jobs)} inpainted, {verdicts.count(None)} verified; "
          f"{rounds} interleaved rounds each, rates of the best runs")
    print(f"{'step':8} {'n':>4} {'ours':>10} {'baseline':>10} {'time ratio':>10}  baseline is")
    for name, n, ours, base, what in rows:
        print(f"{name:8} {n:4d} {_rate(n, ours)} {_rate(n, base)} {ours / base if base else float('inf'):9.2f}x  "
              f"{what}")


def stages() -> None:
    from schemas.config import RunConfig
    from stages.corpus.demo_corpus import build_demo_corpus
    from runtime.executors import LocalExecutor
    from stages.corpus.ingest import ingest
    from stages.synthesis.segment import SegmentStage
    from stages.synthesis.objects import OBJECT_TASKS, ObjectsStage
    from stages.synthesis.pack import SynthPackStage
    from stages.synthesis.repaint import REPAINT_TASKS, RepaintStage

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        build_demo_corpus(corpus)
        cfg = RunConfig(root=str(Path(tmp) / "root"), models_dir=str(Path(tmp) / "models"),
                        synthesis={"tasks": list(OBJECT_TASKS + REPAINT_TASKS), "max_images": 36,
                                   "partition_size": 18})  # the stages of this bench only
        ingest(str(corpus), cfg.root, cfg.ingest)
        print("stages through the local executor, 36 catalog images:")
        ex = LocalExecutor()
        for st in (SegmentStage(cfg), ObjectsStage(cfg), RepaintStage(cfg),
                   SynthPackStage(cfg, shard_name="bench-synthesis")):
            t = time.perf_counter()
            rep = ex.run(st)
            dt = time.perf_counter() - t
            print(f"  {st.label:24} {dt:6.2f} s  {_rate(36, dt)} images  {rep.counts.get('samples', '')}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2, help="times the 13 photos are processed")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    steps(args.repeat, args.rounds)
    stages()
