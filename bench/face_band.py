"""Calibrate the facial band on dlib's descriptor scale, on labelled pairs built from faces that ship offline.

    python -m bench.face_band [--bases 40] [--augs 6]

Faces: skimage's astronaut and the faces of `skimage.data.lfw_subset()` (25x25 LFW crops, upscaled to
100 px and padded so the HOG detector finds them). Labels:
  same_photo  a face and an augmentation of it (crop/scale, shift, colour, flip, blur, JPEG)
  different   two different faces of the set (LFW identities are not labelled: a rare same-person pair
              among them would sit in the upper tail)
Prints quantiles of the cosine (unit descriptors) and of dlib's raw L2 distance per label, then the band.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from mining.faces.dlib_faces import SAME_PERSON_DISTANCE, DlibFaces, FaceFilter, cosine_to_distance

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def base_faces(n: int) -> list[np.ndarray]:
    import skimage.data

    a = Image.fromarray(skimage.data.astronaut()).crop((110, 10, 330, 230)).resize((160, 160), Image.LANCZOS)
    out = [np.asarray(a)]
    for f in skimage.data.lfw_subset()[:100]:
        g = Image.fromarray((f * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
        out.append(np.pad(np.stack([np.asarray(g)] * 3, -1), ((30, 30), (30, 30), (0, 0)), mode="edge"))
        if len(out) >= n:
            break
    return out


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random same-photo variant: crop/scale, shift, colour, flip, blur or JPEG (two of them)."""
    im = Image.fromarray(img)
    w, h = im.size
    for op in rng.choice(6, 2, replace=False):
        if op == 0:  # crop 85-100 % and scale back
            f = rng.uniform(0.85, 1.0)
            cw, ch = int(w * f), int(h * f)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im = im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)
        elif op == 1:  # shift with edge padding
            dx, dy = (int(v) for v in rng.integers(-w // 12, w // 12 + 1, 2))
            a = np.pad(np.asarray(im), ((abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
            im = Image.fromarray(a[abs(dy) - dy: abs(dy) - dy + h, abs(dx) - dx: abs(dx) - dx + w])
        elif op == 2:
            im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
            im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))
            im = ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.5))
        elif op == 3:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif op == 4:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
        else:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=int(rng.integers(30, 70)))
            im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(im)


def measure(n_bases: int, n_augs: int, seed: int = 0) -> dict:
    faces = DlibFaces(filt=FaceFilter(min_face_px=40, min_sharpness=0.0, max_roll_deg=90, max_yaw=10))
    rng = np.random.default_rng(seed)
    bases, norms, lost = [], [], 0
    same_cos, same_dist = [], []
    t0 = time.perf_counter()
    for img in base_faces(n_bases):
        r = faces(img)
        if r.face is None:
            lost += 1
            continue
        bases.append(r.face.descriptor)
        norms.append(r.face.raw_norm)
        for _ in range(n_augs):
            v = faces(augment(img, rng))
            if v.face is None:
                lost += 1
                continue
            c = float(r.face.descriptor @ v.face.descriptor)
            same_cos.append(c)
            same_dist.append(float(cosine_to_distance(c, r.face.raw_norm, v.face.raw_norm)))
    x, nr = np.stack(bases), np.array(norms)
    iu = np.triu_indices(len(x), 1)
    diff_cos = (x @ x.T)[iu]
    diff_dist = cosine_to_distance(diff_cos, nr[iu[0]], nr[iu[1]])
    return {"same_photo": (np.array(same_cos), np.array(same_dist)), "different": (diff_cos, diff_dist),
            "norm_median": float(np.median(nr)), "faces": len(bases), "lost": lost,
            "seconds": time.perf_counter() - t0}


def band(m: dict) -> tuple[float, float]:
    """(lo, hi) on the cosine of unit dlib descriptors; see README "Face similarity band"."""
    nrm = m["norm_median"]
    lo = 1 - 0.5**2 / (2 * nrm**2)  # raw distance 0.5 at the median norm: well inside dlib's 0.6 same-person line
    hi = float(np.quantile(m["same_photo"][0], 0.05))  # above: most likely one photo re-edited (a duplicate)
    return round(lo, 3), round(hi, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bases", type=int, default=40)
    ap.add_argument("--augs", type=int, default=6)
    args = ap.parse_args()
    m = measure(args.bases, args.augs)
    print(f"{m['faces']} faces, {len(m['same_photo'][0])} same_photo + {len(m['different'][0])} different pairs, "
          f"{m['lost']} images without a detected face, {m['seconds']:.1f} s; median raw norm {m['norm_median']:.3f}")
    head = " | ".join(f"q{int(q * 100):02d}" for q in QUANTILES)
    print(f"| label | scale | n | {head} |")
    print("|---|---|---|" + "---|" * len(QUANTILES))
    for label in ("same_photo", "different"):
        for scale, v in zip(("cosine", "L2 distance"), m[label]):
            print(f"| {label} | {scale} | {len(v)} | " + " | ".join(f"{np.quantile(v, q):.3f}" for q in QUANTILES) + " |")
    same_line = 1 - SAME_PERSON_DISTANCE**2 / (2 * m["norm_median"] ** 2)
    lo, hi = band(m)
    print(f"dlib's same-person line (distance {SAME_PERSON_DISTANCE}) at the median norm = cosine {same_line:.3f}")
    print(f"different pairs at or above it: {np.mean(m['different'][0] >= same_line):.4f}; in band: "
          f"{np.mean((m['different'][0] >= lo) & (m['different'][0] <= hi)):.4f}; same_photo in band: "
          f"{np.mean((m['same_photo'][0] >= lo) & (m['same_photo'][0] <= hi)):.4f}")
    print(f"band (ArcFace 0.8-0.9 equivalent) on dlib cosine: {lo} - {hi}")


if __name__ == "__main__":
    main()
