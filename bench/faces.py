"""Faces/s for detection + 5-point landmarks + aligned chip + descriptor: our wrapper against dlib's bare calls.

    python -m bench.faces [--repeat 3]

Inputs: the demo face photos (tasks/demo_corpus.face_photos) and skimage's astronaut at 512 px. Bare: the
detector (upsample 1), shape_predictor, get_face_chip and compute_face_descriptor on each detection. Ours:
DlibFaces.__call__ (the same calls plus the single-face filter, pose and sharpness). One process, one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mining.dlib_faces import DESCRIPTOR_FILE, LANDMARKS_FILE, DlibFaces, model_file


def images() -> list[np.ndarray]:
    import skimage.data

    from tasks.demo_corpus import face_photos

    with tempfile.TemporaryDirectory() as d:
        made = face_photos(Path(d))
        out = [np.asarray(Image.open(Path(d) / rel).convert("RGB")) for rel in made]
    out.append(np.asarray(Image.fromarray(skimage.data.astronaut()).resize((512, 512))))
    return out


def main() -> None:
    import dlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    imgs = images()
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(model_file(None, LANDMARKS_FILE)))
    rec = dlib.face_recognition_model_v1(str(model_file(None, DESCRIPTOR_FILE)))
    ours = DlibFaces()
    ours.setup()
    for label, fn in (("bare dlib", None), ("DlibFaces", ours)):
        faces = 0
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            for im in imgs:
                if fn is None:
                    for r in det(im, 1):
                        s = sp(im, r)
                        dlib.get_face_chip(im, s, size=150)
                        rec.compute_face_descriptor(im, s)
                        faces += 1
                else:
                    faces += fn(im).face is not None
        dt = time.perf_counter() - t0
        print(f"{label:10s} {len(imgs) * args.repeat} images, {faces} faces described, {dt:.2f} s, "
              f"{faces / dt:.1f} faces/s, {len(imgs) * args.repeat / dt:.1f} images/s")


if __name__ == "__main__":
    main()
