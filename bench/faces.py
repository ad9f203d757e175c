"""Faces/s for detection + 5-point landmarks + aligned chip + descriptor: our wrapper against dlib's bare calls.

    python -m bench.faces [--repeat 3] [--rounds 3]

Inputs: the demo face photos (stages/corpus/demo_corpus.face_photos) and skimage's astronaut at 512 px. Bare: the
detector (upsample 1), shape_predictor, get_face_chip and compute_face_descriptor on each detection. Ours:
DlibFaces.__call__ (the same calls plus the single-face filter, pose and sharpness). One process; the two
run interleaved for --rounds rounds (each run: --repeat passes over the images), rates of the best runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import interleave, ratio, report  # noqa: E402
from mining.faces.dlib_faces import DESCRIPTOR_FILE, LANDMARKS_FILE, DlibFaces, model_file  # noqa: E402


def images() -> list[np.ndarray]:
    import skimage.data

    from stages.corpus.demo_corpus import face_photos

    with tempfile.TemporaryDirectory() as d:
        made = face_photos(Path(d))
        out = [np.asarray(Image.open(Path(d) / rel).convert("RGB")) for rel in made]
    out.append(np.asarray(Image.fromarray(skimage.data.astronaut()).resize((512, 512))))
    return out


def main() -> None:
    import dlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each side")
    args = ap.parse_args()
    imgs = images()
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(model_file(None, LANDMARKS_FILE)))
    rec = dlib.face_recognition_model_v1(str(model_file(None, DESCRIPTOR_FILE)))
    ours = DlibFaces()
    ours.setup()

    def bare() -> int:
        faces = 0
        for _ in range(args.repeat):
            for im in imgs:
                for r in det(im, 1):
                    s = sp(im, r)
                    dlib.get_face_chip(im, s, size=150)
                    rec.compute_face_descriptor(im, s)
                    faces += 1
        return faces

    def wrapped() -> int:
        return sum(ours(im).face is not None for _ in range(args.repeat) for im in imgs)

    t = interleave([("bare dlib", bare), ("DlibFaces", wrapped)], rounds=args.rounds)
    n = len(imgs) * args.repeat
    print(f"{n} images per run, {args.rounds} interleaved rounds; rates of the best runs")
    print("\n".join(report(t, "bare dlib", width=10)))
    for label, tm in t.items():
        print(f"{label:10s} {tm.result} faces described, {tm.result / tm.best:.1f} faces/s, {n / tm.best:.1f} images/s")
    print(f"ratio {ratio(t, 'DlibFaces', 'bare dlib'):.2f}x, of bests")


if __name__ == "__main__":
    main()
