"""The demo corpus: real photos shipped inside scikit-image and scikit-learn, known transformations of
them (families of related images), odd-but-valid files, and bad files of every kind ingest rejects.

`ground_truth.json` beside the images records each family (base, variants, transformation, parameters,
instruction) and the outcome ingest must reach for every file.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps

from mining.image.transforms import apply
from schemas.config import DemoConfig
from schemas.layout import DemoFiles

GROUND_TRUTH = DemoFiles.GROUND_TRUTH


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _stereo(side: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return skimage.data.stereo_motorcycle()[side]

    return load


BASE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"), "chelsea": _skimage("chelsea"), "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"), "camera": _skimage("camera"), "coins": _skimage("coins"),
    "hubble": _skimage("hubble_deep_field"), "ihc": _skimage("immunohistochemistry"),
    "page": _skimage("page"), "retina": _skimage("retina"), "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"), "motorcycle": _stereo(0),
}


def _photo(load: Callable[[], np.ndarray], max_side: int) -> Image.Image:
    arr = load()
    im = Image.fromarray(arr).convert("RGB")
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    return im


def _save(im: Image.Image, path: Path, **kw: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header declares width x height (a decompression-bomb stand-in)."""
    data = bytearray(_png_bytes(Image.new("L", (64, 64))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _odd_files(out: Path, max_side: int) -> dict[str, dict[str, Any]]:
    """Valid images in awkward encodings; each must be accepted."""
    gt: dict[str, dict[str, Any]] = {}
    brick = _photo(_skimage("brick"), max_side)
    gray16 = (np.asarray(brick.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    _save(Image.fromarray(gray16), out / "odd/gray16.png")
    _save(_photo(_skimage("grass"), max_side).quantize(64), out / "odd/palette.png")
    _save(_photo(_skimage("gravel"), max_side).convert("CMYK"), out / "odd/cmyk.jpg", quality=90)
    _save(Image.fromarray(_skimage("logo")()), out / "odd/alpha.png")
    moon = _photo(_skimage("moon"), max_side).crop((0, 0, max_side, max_side * 3 // 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display; pixels stored rotated back
    _save(moon.transpose(Image.Transpose.ROTATE_90), out / "odd/exif_rotated.jpg", exif=exif, quality=92)
    for name, expect in [("gray16.png", "I;16"), ("palette.png", "P"), ("cmyk.jpg", "CMYK"),
                         ("alpha.png", "RGBA"), ("exif_rotated.jpg", "RGB")]:
        gt[f"odd/{name}"] = {"outcome": "accepted", "mode": expect}
    gt["odd/exif_rotated.jpg"]["display_size"] = list(moon.size)
    return gt


def _bad_files(out: Path, sample_jpeg: bytes, sample_png: bytes) -> dict[str, dict[str, Any]]:
    bad = out / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    corrupt = bytearray(sample_png)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 64] = bytes(64)
    files: dict[str, tuple[bytes, str]] = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (sample_jpeg[: len(sample_jpeg) * 2 // 5], "truncated"),
        "truncated.png": (sample_png[: len(sample_png) // 2], "truncated"),
        "not_image.png": (b"this is a text file with an image extension\n" * 20, "not_an_image"),
        "random_bytes.jpg": (np.random.default_rng(7).bytes(4096), "not_an_image"),
        "corrupt.png": (bytes(corrupt), "corrupt"),
        "bomb.png": (_bomb_png(40000, 40000), "too_large"),
        "tiny.png": (_png_bytes(Image.new("RGB", (16, 16), (200, 30, 30))), "too_small"),
    }
    gt = {}
    for name, (data, reason) in files.items():
        (bad / name).write_bytes(data)
        gt[f"bad/{name}"] = {"outcome": "quarantined", "reason": reason}
    return gt


# photos with a sign or caption (English and Chinese): real candidates for text removal. Kept out of the
# families, on photos no family uses, and named to sort first in the catalog (the demo's OCR budget is
# its first rows)
TEXT_PHOTOS = (("colorwheel", "en", "OPEN DAILY"), ("clock", "zh", "欢迎光临"), ("cell", "en", "LAB NOTES"),
               ("microaneurysms", "zh", "图书馆"), ("horse", "en", "FARM SHOP"), ("coins", "zh", "市场"))


def _text_photos(out: Path, max_side: int) -> dict[str, dict[str, Any]]:
    from PIL import ImageDraw, ImageFont

    from mining.text.ocr import find_font

    gt = {}
    for i, (name, script, text) in enumerate(TEXT_PHOTOS):
        im = _photo(_skimage(name), max_side)
        if name == "coins":  # a family photo: mirrored and cropped so it clusters apart from its family
            im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).crop((0, 0, im.width * 2 // 3, im.height))
        font = ImageFont.truetype(find_font(script), max(16, im.height // 9))
        x0, y0, x1, y1 = font.getbbox(text)
        left, top = (im.width - (x1 - x0)) // 2, (im.height // 8 if i % 2 else im.height * 5 // 7)
        ImageDraw.Draw(im).rectangle((left - 8, top - 6, left + x1 - x0 + 8, top + y1 - y0 + 6), fill=(245, 240, 225))
        ImageDraw.Draw(im).text((left - x0, top - y0), text, font=font, fill=(20, 30, 90))
        rel = f"captions/{name}.png"
        _save(im, out / rel)
        gt[rel] = {"outcome": "accepted", "text": text, "script": script}
    return gt


# the style family: quarter crops of photos rendered through one classical stylisation, so the style
# union-find (stages/synthesis/style.py) has a real family to find; the photos are its content images
STYLE_FAMILY = (("china", 0), ("china", 3), ("flower", 0), ("flower", 3), ("motorcycle", 0), ("ihc", 3))
STYLE_FAMILY_STYLE = "poster"


def style_family(out: Path, max_side: int) -> dict[str, dict[str, Any]]:
    """styles/<style>/<photo>-q<k>.png (quarter k of the photo, stylised) for STYLE_FAMILY; returns their
    expected outcomes."""
    from mining.style.stylize import stylize

    gt = {}
    for name, quarter in STYLE_FAMILY:
        a = BASE_PHOTOS[name]()
        h, w = a.shape[0] // 2, a.shape[1] // 2
        y, x = (quarter // 2) * h, (quarter % 2) * w
        im = Image.fromarray(a[y:y + h, x:x + w]).convert("RGB")
        im.thumbnail((min(max_side, 96),) * 2, Image.Resampling.LANCZOS)  # small: one palette texture
        rel = f"styles/{STYLE_FAMILY_STYLE}/{name}-q{quarter}.png"
        _save(Image.fromarray(stylize(STYLE_FAMILY_STYLE, np.asarray(im))), out / rel)
        gt[rel] = {"outcome": "accepted", "style": STYLE_FAMILY_STYLE}
    return gt


OWNER = ".aceforge-demo-corpus"  # written first: this folder was made by build_demo_corpus


def current_corpus(out_dir: str | Path, cfg: DemoConfig) -> dict[str, Any] | None:
    """The ground truth of a complete corpus built with `cfg` in out_dir (written last), else None."""
    path = Path(out_dir) / GROUND_TRUTH
    if not path.is_file():
        return None
    gt = json.loads(path.read_text())
    return gt if gt.get("config") == cfg.model_dump(mode="json") else None


def build_demo_corpus(out_dir: str | Path, cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Write the corpus under out_dir and return its ground truth. A complete corpus of the same config is
    kept as it is (nothing rewritten); one of another config, or a partial one, is replaced only if this
    function made it; any other non-empty folder is refused."""
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    done = current_corpus(out, cfg)
    if done is not None:
        return done
    if out.exists() and any(out.iterdir()):
        if not (out / OWNER).is_file() and not (out / GROUND_TRUTH).is_file():
            raise FileExistsError(f"{out} is not empty and was not made by aceforge demo-corpus: choose another "
                                  "folder (nothing there was touched)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OWNER).write_text("made by aceforge demo-corpus; it may delete and rebuild this folder\n")
    rng = np.random.default_rng(cfg.seed)
    families: dict[str, list[dict[str, Any]]] = {}
    expected: dict[str, dict[str, Any]] = {}
    for name, load in BASE_PHOTOS.items():
        base = _photo(load, cfg.max_side)
        base_rel = f"photos/{name}/base.png"
        _save(base, out / base_rel)
        members = [{"file": base_rel, "transform": None, "params": {}, "instruction": None}]
        for variant in cfg.variants:
            t = apply(variant, base, rng)
            ext = "png" if variant == "recompress" else "jpg"
            rel = f"photos/{name}/{variant}.{ext}"
            _save(t.image, out / rel, **({"quality": 92} if ext == "jpg" else {}))
            members.append({"file": rel, "transform": variant, "params": t.params, "instruction": t.instruction})
        families[name] = members
        expected.update({m["file"]: {"outcome": "accepted"} for m in members})
    right = _photo(_stereo(1), cfg.max_side)
    _save(right, out / "photos/motorcycle/stereo_right.jpg", quality=92)
    families["motorcycle"].append({"file": "photos/motorcycle/stereo_right.jpg", "transform": "stereo_right",
                                   "params": {}, "instruction": "Show {image} from a viewpoint slightly to the right."})
    expected["photos/motorcycle/stereo_right.jpg"] = {"outcome": "accepted"}

    shutil.copyfile(out / "photos/astronaut/base.png", out / "photos/astronaut_copy.png")
    expected["photos/astronaut_copy.png"] = {"outcome": "duplicate", "of": "photos/astronaut/base.png"}
    faces = face_photos(out)
    expected.update({rel: {"outcome": "accepted"} for rel in faces})
    expected.update(_odd_files(out, cfg.max_side))
    if cfg.text_photos:
        expected.update(_text_photos(out, cfg.max_side))
    if cfg.style_family:
        expected.update(style_family(out, cfg.max_side))
    expected.update(_bad_files(out, (out / "photos/coffee/hflip.jpg").read_bytes(),
                               (out / "photos/coffee/base.png").read_bytes()))
    gt = {"families": families, "faces": faces, "expected": dict(sorted(expected.items())), "seed": cfg.seed,
          "config": cfg.model_dump(mode="json")}
    (out / GROUND_TRUTH).write_text(json.dumps(gt, indent=1))
    return gt


def family_member_ids(corpus_dir: str | Path, catalog) -> dict[str, list[tuple[dict[str, Any], str | None]]]:
    """Per family, each ground-truth member with its catalog id (None when ingest did not accept it)."""
    corpus = Path(corpus_dir).resolve()
    by_path = {str(Path(r.uri).resolve()): r.id for r in catalog}
    return {fam: [(m, by_path.get(str(corpus / m["file"]))) for m in members]
            for fam, members in load_ground_truth(corpus)["families"].items()}


def load_ground_truth(corpus_dir: str | Path) -> dict[str, Any]:
    path = Path(corpus_dir) / GROUND_TRUTH
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the corpus with `aceforge demo-corpus {corpus_dir}`")
    return json.loads(path.read_text())


def generate_variants(out: str | Path, n: int, seed: int = 0, start: int = 0,
                      long_side: tuple[int, int] = (256, 640)) -> list[Path]:
    """n JPEGs made from the demo photos (random crops of 40-100 %, flips, colour jitter, quality 60-95,
    `long_side` px on the long side), named <index>.jpg from `start`: a corpus of any size for benchmarks
    and scale tests. The same (seed, index, long_side) always gives the same image."""
    from PIL import ImageEnhance, ImageOps

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = [_photo(load, 640) for load in BASE_PHOTOS.values()]
    written = []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        im = photos[i % len(photos)]
        w, h = im.size
        f = rng.uniform(0.4, 1.0)
        cw, ch = max(32, int(w * f)), max(32, int(h * f))
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        im = im.crop((int(x), int(y), int(x) + cw, int(y) + ch))
        side = int(rng.integers(long_side[0], long_side[1] + 1))
        im = im.resize((max(64, side * cw // max(cw, ch)), max(64, side * ch // max(cw, ch))))
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
        written.append(out / f"{i:06d}.jpg")
        written[-1].write_bytes(buf.getvalue())
    return written


# Facial editing inputs: who each face is and how it was made. Different photos of one person do not ship
# offline, so heavy edits of one photo (re-framed, low resolution, grey) stand in for them.
FACE_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "base": lambda im: im,
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "warm": lambda im: Image.merge("RGB", [c.point(lambda v, f=f: min(255, int(v * f))) for c, f in
                                           zip(im.split(), (1.15, 1.0, 0.85))]),
    "reframed_lowres": lambda im: im.crop((12, 6, im.width - 20, im.height - 18)).resize(
        (im.width // 2, im.height // 2), Image.Resampling.BILINEAR).resize(im.size, Image.Resampling.BICUBIC),
    "tilted_lowres": lambda im: im.rotate(10, resample=Image.Resampling.BICUBIC).resize(
        (im.width // 2, im.height // 2), Image.Resampling.BILINEAR).resize(im.size, Image.Resampling.BICUBIC),
    "zoom": lambda im: im.crop((20, 10, im.width - 20, im.height - 30)).resize(im.size, Image.Resampling.BICUBIC),
}


def _face_sources() -> dict[str, Image.Image]:
    import skimage.data

    out = {"astronaut": Image.fromarray(skimage.data.astronaut()).crop((100, 0, 340, 240)).resize(
        (160, 160), Image.Resampling.LANCZOS)}
    lfw = skimage.data.lfw_subset()
    for i in (0, 5):  # two LFW faces (25 px), upscaled and padded so the detector finds them
        g = Image.fromarray((lfw[i] * 255).astype(np.uint8)).resize((100, 100), Image.Resampling.BICUBIC)
        out[f"lfw{i}"] = Image.fromarray(np.pad(np.stack([np.asarray(g)] * 3, -1), ((30, 30), (30, 30), (0, 0)),
                                                mode="edge"))
    return out


def face_photos(out: Path) -> dict[str, dict[str, str]]:
    """Small face photos under faces/: {file: {person, edit}}; the astronaut under every edit, two other
    people under a few."""
    made: dict[str, dict[str, str]] = {}
    for person, im in _face_sources().items():
        edits = FACE_EDITS if person == "astronaut" else ("base", "zoom", "warm")
        for edit in edits:
            rel = f"faces/{person}/{edit}.png"
            _save(FACE_EDITS[edit](im), out / rel)
            made[rel] = {"person": person, "edit": edit}
    return made
