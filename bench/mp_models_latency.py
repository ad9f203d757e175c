"""Per-image CPU latency of the MediaPipe selfie segmenter and BlazePose (one thread), on a 512x512 portrait.

Needs the models fetched (`python -m mining.models.mediapipe fetch`); ACEFORGE_MODELS picks the models directory.
"""

import statistics
import time

import numpy as np
from skimage import data

from mining.models.mediapipe import PoseEstimator, SelfieSegmenter
from schemas.config.run import default_models_dir


def main(repeats: int = 30) -> None:
    models = default_models_dir()
    img = data.astronaut()
    brick = np.ascontiguousarray(np.repeat(data.brick()[:512, :512, None], 3, axis=2))
    for model in (SelfieSegmenter(models), PoseEstimator(models)):
        model.setup()
        for label, im in (("portrait", img), ("no person", brick)):
            model(im)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                model(im)
                times.append(time.perf_counter() - t)
            print(f"{model.name:32s} {label:10s} 512x512  median {1000 * statistics.median(times):6.1f} ms  "
                  f"p90 {1000 * sorted(times)[int(0.9 * repeats)]:6.1f} ms  (1 thread)")


if __name__ == "__main__":
    main()
