"""A varied corpus for measuring supervision quality, bigger than the demo: the demo corpus, then real photos
shipped with scikit-image and scikit-learn under crops, flips, jitter and rescales, grey sources, text-like
textures without text, photos with rendered English and Chinese text, more faces, two more planted style
families and near-duplicate chains. Deterministic from the seed; `quality_corpus.json` records every file's
kind and how it was made.

    python bench/quality_corpus.py --out DIR [--n 600] [--seed 0]

Folders sort so that the text-bearing and text-like images are the first catalog rows (the text stage's
`synthesis.text.max_images` budget reads the first rows by URI): 0-text, 1-textlike, 2-grey, then the rest.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MARKER = ".aceforge-quality-corpus"
GROUND_TRUTH = "quality_corpus.json"
MAX_SIDE = 640


def _sk(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        a = getattr(skimage.data, name)()
        return (a * 255).astype(np.uint8) if a.dtype == bool else a

    return load


def _blobs() -> np.ndarray:
    import skimage.data

    return skimage.data.binary_blobs(512, rng=0).astype(np.uint8) * 255  # random unless seeded


# scikit-image loaders that need no download (checked on 0.26; eagle, lily, kidney, skin, vortex, brain,
# cells3d, human_mitosis, nickel_solidification, protein_transport fetch over the network and are left out)
EXTRA_COLOUR = {"cat": _sk("cat"), "colorwheel": _sk("colorwheel"),
                "logo": lambda: np.asarray(Image.fromarray(_sk("logo")()).convert("RGB"))}
GREY = {"camera": _sk("camera"), "moon": _sk("moon"), "text": _sk("text"), "page": _sk("page"),
        "coins": _sk("coins"), "clock": _sk("clock"), "cell": _sk("cell"), "horse": _sk("horse")}
# repetitive structure an OCR model may read as glyphs: none of them carries text
TEXTLIKE = {"brick": _sk("brick"), "grass": _sk("grass"), "gravel": _sk("gravel"),
            "checkerboard": _sk("checkerboard"), "blobs": _blobs,
            "hubble": _sk("hubble_deep_field"), "retina": _sk("retina"), "ihc": _sk("immunohistochemistry")}
# the chains slide over the widest photos
CHAIN_PHOTOS = ("hubble", "retina", "rocket", "china", "coffee", "cat", "motorcycle", "flower", "astronaut")
STYLE_FAMILIES = {"watercolour": ("astronaut", "coffee", "rocket", "cat", "hubble", "retina"),
                  "pencil": ("chelsea", "china", "flower", "coffee", "motorcycle", "astronaut")}


def _colour_photos() -> dict[str, Callable[[], np.ndarray]]:
    from stages.corpus.demo_corpus import BASE_PHOTOS

    colour = {k: v for k, v in BASE_PHOTOS.items() if k not in ("camera", "coins", "page")}
    return {**colour, **EXTRA_COLOUR, "hubble": _sk("hubble_deep_field"), "retina": _sk("retina")}


def _rgb(a: np.ndarray, max_side: int = MAX_SIDE) -> Image.Image:
    im = Image.fromarray(a).convert("RGB")
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return im


def _save(im: Image.Image, out: Path, rel: str, gt: dict, **meta: Any) -> None:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **({"quality": int(meta.pop("quality", 92))} if rel.endswith(".jpg") else {}))
    gt[rel] = meta


def _crop(im: Image.Image, rng: np.random.Generator, lo: float, hi: float) -> tuple[Image.Image, list[int]]:
    f = float(rng.uniform(lo, hi))
    cw, ch = max(64, int(im.width * f)), max(64, int(im.height * f))
    cw, ch = min(cw, im.width), min(ch, im.height)
    x, y = int(rng.integers(0, im.width - cw + 1)), int(rng.integers(0, im.height - ch + 1))
    return im.crop((x, y, x + cw, y + ch)), [x, y, x + cw, y + ch]


def _rescale(im: Image.Image, rng: np.random.Generator, lo: int = 256, hi: int = MAX_SIDE) -> Image.Image:
    side = int(rng.integers(lo, hi + 1))
    s = side / max(im.size)
    return im.resize((max(64, round(im.width * s)), max(64, round(im.height * s))), Image.Resampling.LANCZOS)


def text_images(out: Path, gt: dict, n: int, seed: int) -> None:
    """n crops of colour and grey photos with one rendered English or Chinese text (alternating)."""
    from mining.text.render import render_text

    photos = {**_colour_photos(), **{k: GREY[k] for k in ("camera", "moon", "coins")}}
    names = sorted(photos)
    for i in range(n):
        rng = np.random.default_rng([seed, 1, i])
        script = ("en", "zh")[i % 2]
        name = names[int(rng.integers(len(names)))]
        base, box = _crop(_rgb(photos[name]()), rng, 0.5, 0.95)
        base = _rescale(base, rng, 256, 512)
        for _ in range(8):
            got = render_text(np.asarray(base), script, rng)
            if got is not None:
                break
        if got is None:
            raise RuntimeError(f"no text fits on a crop of {name} after 8 draws")
        img, _, info = got
        ext = "png" if i % 3 else "jpg"
        _save(Image.fromarray(img), out, f"0-text/{script}/{i:03d}-{name}.{ext}", gt, kind="text", photo=name,
              crop=box, **info.params())


def textlike(out: Path, gt: dict, per: int, seed: int) -> None:
    for j, name in enumerate(sorted(TEXTLIKE)):
        src = _rgb(TEXTLIKE[name](), 1024)
        for k in range(per):
            rng = np.random.default_rng([seed, 2, j, k])
            im, box = _crop(src, rng, 0.35, 0.8)
            _save(_rescale(im, rng, 256, 448), out, f"1-textlike/{name}-{k}.png", gt, kind="textlike", photo=name,
                  crop=box)


def grey(out: Path, gt: dict, seed: int) -> None:
    """Grey sources: stored as mode L, and (a second copy, cropped) as RGB with three equal channels."""
    for j, name in enumerate(sorted(GREY)):
        a = GREY[name]()
        im = Image.fromarray(a).convert("L")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        _save(im, out, f"2-grey/{name}.png", gt, kind="grey", photo=name, mode="L")
        rng = np.random.default_rng([seed, 3, j])
        crop, box = _crop(im.convert("RGB"), rng, 0.7, 0.9)
        _save(crop, out, f"2-grey/{name}-rgb.jpg", gt, kind="grey", photo=name, mode="RGB", crop=box)
    # colour photos made grey: the colour original is elsewhere in the corpus
    for name in ("astronaut", "chelsea", "coffee"):
        im = ImageOps.grayscale(_rgb(_colour_photos()[name]())).convert("RGB")
        _save(im, out, f"2-grey/{name}-greyed.jpg", gt, kind="grey", photo=name, mode="RGB", greyed=True)


def faces(out: Path, gt: dict, people: int) -> None:
    """LFW faces (25 px, upscaled and padded as the demo's), each under three edits of the demo's."""
    import skimage.data

    from stages.corpus.demo_corpus import FACE_EDITS

    lfw = skimage.data.lfw_subset()  # the first 100 are faces
    for i in np.linspace(10, 99, people).astype(int):
        g = Image.fromarray((lfw[i] * 255).astype(np.uint8)).resize((100, 100), Image.Resampling.BICUBIC)
        im = Image.fromarray(np.pad(np.stack([np.asarray(g)] * 3, -1), ((30, 30), (30, 30), (0, 0)), mode="edge"))
        for edit in ("base", "zoom", "reframed_lowres"):
            _save(FACE_EDITS[edit](im), out, f"faces/lfw{i:03d}/{edit}.png", gt, kind="face", person=f"lfw{i}",
                  edit=edit)


def styles(out: Path, gt: dict, seed: int) -> None:
    """Two planted style families: a random quarter-ish crop of each photo through one stylisation."""
    from mining.style.stylize import stylize

    photos = _colour_photos()
    for j, (style, names) in enumerate(STYLE_FAMILIES.items()):
        for k, name in enumerate(names):
            rng = np.random.default_rng([seed, 4, j, k])
            im, box = _crop(_rgb(photos[name]()), rng, 0.45, 0.6)
            im.thumbnail((128, 128), Image.Resampling.LANCZOS)
            _save(Image.fromarray(stylize(style, np.asarray(im))), out, f"styles/{style}/{name}-{k}.png", gt,
                  kind="style", style=style, photo=name, crop=box)


def chains(out: Path, gt: dict, n_chains: int, steps: int, seed: int) -> None:
    """Near-duplicate chains: a window sliding 7 % per step over one photo, brightness drifting a little; each
    step is close to the next, the ends are not."""
    photos = _colour_photos()
    for c in range(n_chains):
        name = CHAIN_PHOTOS[c % len(CHAIN_PHOTOS)]
        rng = np.random.default_rng([seed, 5, c])
        src = _rgb(photos[name](), 800)
        w, h = int(src.width * 0.6), int(src.height * 0.6)
        dx, dy = (src.width - w) / max(1, steps - 1), (src.height - h) / max(1, steps - 1) * float(rng.uniform(0, 1))
        drift = float(rng.uniform(-0.04, 0.04))
        for k in range(steps):
            box = (round(k * dx), round(k * dy), round(k * dx) + w, round(k * dy) + h)
            im = ImageEnhance.Brightness(src.crop(box)).enhance(1 + drift * k)
            _save(im, out, f"chains/{c:02d}-{name}/step{k}.jpg", gt, kind="chain", photo=name, step=k, box=list(box))


def families(out: Path, gt: dict, n: int, seed: int) -> None:
    """The photos the demo leaves out (and the grey ones in colour-less RGB), each a base and known
    transformations (mining/image/transforms.py) of it, rescaled: families with ground-truth instructions."""
    from mining.image.transforms import TRANSFORMS, apply

    photos = {**EXTRA_COLOUR, "hubble": _sk("hubble_deep_field"), "retina": _sk("retina"),
              **{k: GREY[k] for k in ("camera", "moon", "clock", "cell")}}
    names = sorted(photos)
    bases = {k: _rgb(photos[k]()) for k in names}
    for i in range(n):
        rng = np.random.default_rng([seed, 6, i])
        name = names[i % len(names)]
        if i < len(names):
            _save(bases[name], out, f"photos/{name}/base.png", gt, kind="family", photo=name, transform=None)
            continue
        t = apply(str(rng.choice(sorted(TRANSFORMS))), bases[name], rng)
        im = _rescale(t.image, rng, 256, MAX_SIDE)
        _save(im, out, f"photos/{name}/v{i:04d}.jpg", gt, kind="family", photo=name, params=t.params,
              instruction=t.instruction, quality=int(rng.integers(70, 96)))


def jittered(out: Path, gt: dict, n: int, seed: int) -> None:
    """The demo photos under random crops, flips, colour jitter, rescales and JPEG quality."""
    from stages.corpus.demo_corpus import generate_variants

    for p in generate_variants(out / "jitter", n, seed=seed):
        gt[str(p.relative_to(out))] = {"kind": "jitter"}


def build(out: Path, n: int, seed: int) -> dict[str, Any]:
    from schemas.config import DemoConfig
    from stages.corpus.demo_corpus import build_demo_corpus

    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SystemExit(f"{out} is not empty and was not made by this script: choose another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by bench/quality_corpus.py; it may delete and rebuild this folder\n")
    gt: dict[str, dict] = {}
    demo = build_demo_corpus(out / "demo", DemoConfig(seed=seed, style_family=True))
    for rel, e in demo["expected"].items():
        gt[f"demo/{rel}"] = {"kind": "demo", **e}
    text_images(out, gt, max(4, n // 12), seed)
    textlike(out, gt, max(1, n // 250), seed)
    grey(out, gt, seed)
    faces(out, gt, max(2, n // 60))
    styles(out, gt, seed)
    chains(out, gt, max(2, n // 100), 6, seed)
    rest = n - len(gt)
    if rest > 0:
        families(out, gt, rest // 2, seed)
        jittered(out, gt, n - len(gt), seed)
    (out / GROUND_TRUTH).write_text(json.dumps({"n": n, "seed": seed, "files": dict(sorted(gt.items()))}, indent=1,
                                               ensure_ascii=False))
    return gt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=600, help="files in all (the fixed parts may exceed a small n)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    gt = build(a.out, a.n, a.seed)
    kinds = Counter(e["kind"] for e in gt.values())
    outcomes = Counter(e.get("outcome", "accepted") for e in gt.values())
    scripts = Counter(e["script"] for e in gt.values() if e["kind"] == "text")
    print(f"{a.out}: {len(gt)} files ({dict(outcomes)})")
    for kind, c in sorted(kinds.items()):
        extra = f"  {dict(scripts)}" if kind == "text" else ""
        print(f"  {kind:10s} {c:5d}{extra}")


if __name__ == "__main__":
    main()
