"""Condition-map and degradation throughput on the demo photos: images/s per map type, beside the bare
library call each map is built on (the baseline), then the maps stage end to end.

    python bench/synth_maps.py [--repeat 2] [--rounds 3]

Per map (one process, one core; map and baseline interleaved for --rounds rounds, rates of the best runs,
bench/_timing.py): grayscale vs cv2.cvtColor; canny vs cv2.Canny on the
luma; mosaic vs one cv2.resize down and one up; contour vs cv2.GaussianBlur; doodle vs cv2.medianBlur of
its 64 px copy; scribble vs skimage skeletonize of a thresholded gradient; segmentation (region proposer +
colouring) vs one raw felzenszwalb call; degradation vs one cv2.GaussianBlur. Depth and pose need model
files (absent offline): not measured here. Then the maps stage (every map task, the proposer as
segmenter) through the local executor on the demo corpus' first 36 catalog images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import interleave, ratio  # noqa: E402


def _photos() -> list[np.ndarray]:
    from stages.corpus.demo_corpus import BASE_PHOTOS, _photo

    return [np.asarray(_photo(load, 384).convert("RGB")) for load in BASE_PHOTOS.values()]


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f}/s" if seconds > 0 else "     inf"


def maps(repeat: int, rounds: int) -> None:
    import cv2
    from skimage.morphology import skeletonize
    from skimage.segmentation import felzenszwalb

    from mining.maps import cond_maps as cm
    from mining.image.degrade import degrade
    from mining.objects.segment import RegionProposer

    images = _photos() * repeat
    rng = lambda i: np.random.default_rng(i)  # noqa: E731
    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in images]
    seg = RegionProposer()
    cases = [
        ("grayscale", lambda: [cm.grayscale(im) for im in images],
         lambda: [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in images], "cv2.cvtColor"),
        ("canny", lambda: [cm.canny(im) for im in images], lambda: [cv2.Canny(g, 100, 200) for g in gray],
         "cv2.Canny on the luma"),
        ("mosaic", lambda: [cm.mosaic(im, rng(i)) for i, im in enumerate(images)],
         lambda: [cv2.resize(cv2.resize(im, (24, 24), interpolation=cv2.INTER_AREA), im.shape[1::-1],
                             interpolation=cv2.INTER_NEAREST) for im in images], "cv2.resize down + up"),
        ("contour", lambda: [cm.contour(im) for im in images],
         lambda: [cv2.GaussianBlur(g, (0, 0), 2) for g in gray], "cv2.GaussianBlur"),
        ("doodle", lambda: [cm.doodle(im, rng(i)) for i, im in enumerate(images)],
         lambda: [cv2.medianBlur(cv2.resize(g, (64, 64)), 5) for g in gray], "cv2.medianBlur, 64 px"),
        ("scribble", lambda: [cm.scribble(im, rng(i)) for i, im in enumerate(images)],
         lambda: [skeletonize(cv2.Sobel(g, cv2.CV_32F, 1, 0) > 60) for g in gray], "skeletonize of a threshold"),
        ("segmentation", lambda: [cm.segmentation(im, [r.mask for r in seg(im)]) for im in images],
         lambda: [felzenszwalb(im, scale=400, sigma=0.8) for im in images], "raw felzenszwalb, one scale"),
        ("degradation", lambda: [degrade(im, rng(i)) for i, im in enumerate(images)],
         lambda: [cv2.GaussianBlur(im, (0, 0), 1.5) for im in images], "one cv2.GaussianBlur"),
    ]
    print(f"{len(images)} demo photos (longer side 384); {rounds} interleaved rounds each, rates of the best runs")
    print(f"{'map':13} {'ours':>10} {'baseline':>10} {'time ratio':>10}  baseline is")
    for name, ours, base, what in cases:
        t = interleave([("baseline", base), ("ours", ours)], rounds=rounds)
        print(f"{name:13} {_rate(len(images), t['ours'].best)} {_rate(len(images), t['baseline'].best)} "
              f"{ratio(t, 'ours', 'baseline'):9.2f}x  {what}")


def stage() -> None:
    from schemas.config import MAP_TASKS, RunConfig
    from stages.corpus.demo_corpus import build_demo_corpus
    from runtime.executors import LocalExecutor
    from stages.corpus.ingest import ingest
    from stages.synthesis.maps import MapsStage

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        build_demo_corpus(corpus)
        cfg = RunConfig(root=str(Path(tmp) / "root"), models_dir=str(Path(tmp) / "models"),
                        synthesis={"tasks": list(MAP_TASKS), "max_images": 36, "partition_size": 18})
        ingest(str(corpus), cfg.root, cfg.ingest)
        t = time.perf_counter()
        rep = LocalExecutor().run(MapsStage(cfg))
        dt = time.perf_counter() - t
        print(f"maps stage, 36 catalog images: {dt:.2f} s ({_rate(36, dt)} images); samples {rep.counts['samples']}; "
              f"dropped {rep.counts['dropped']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2, help="times the demo photos are processed")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    maps(args.repeat, args.rounds)
    stage()
