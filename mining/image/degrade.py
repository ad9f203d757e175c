"""Degradations for restoration pairs (ACE's degradation map; the taxonomy's restoration tasks).

Four operations, a random subset applied in a random order with random strengths, all drawn from the
generator passed in, each recorded: noise (gaussian or poisson), blur (isotropic or anisotropic gaussian
kernel), JPEG compression, down-up scaling. RGB uint8 in, RGB uint8 of the same size out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEGRADER = ("degrade-classical", "1")
OPS = ("noise", "blur", "jpeg", "resize")


@dataclass(frozen=True)
class DegradeRanges:
    """Strength ranges (low, high) and which operations may be drawn."""

    ops: tuple[str, ...] = OPS
    noise_sigma: tuple[float, float] = (3.0, 25.0)  # gaussian noise std, in 0..255 units
    poisson_scale: tuple[float, float] = (0.5, 4.0)  # photons per level / this: higher = noisier
    blur_sigma: tuple[float, float] = (0.6, 3.0)  # gaussian kernel std in px (each axis for anisotropic)
    jpeg_quality: tuple[int, int] = (15, 60)
    down_factor: tuple[float, float] = (1.5, 4.0)
    p_op: float = 0.5  # chance each operation is drawn (at least one always is)

    def __post_init__(self) -> None:
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"degradation ops must be a non-empty subset of {OPS}, got {list(self.ops)}")


def gaussian_kernel(sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """A normalised 2-D gaussian kernel with axis stds (sigma_x, sigma_y) rotated by `angle` radians;
    sigma_x == sigma_y gives the isotropic kernel. Size: odd, covering 3 std of the wider axis."""
    r = int(np.ceil(3 * max(sigma_x, sigma_y)))
    ys, xs = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xs + s * ys, -s * xs + c * ys
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def add_noise(img: np.ndarray, rng: np.random.Generator, r: DegradeRanges) -> tuple[np.ndarray, dict]:
    x = img.astype(np.float64)
    if rng.random() < 0.5:
        sigma = float(rng.uniform(*r.noise_sigma))
        out = x + rng.normal(0.0, sigma, x.shape)
        op = {"op": "noise", "kind": "gaussian", "sigma": sigma}
    else:
        scale = float(rng.uniform(*r.poisson_scale))
        out = rng.poisson(x / scale) * scale
        op = {"op": "noise", "kind": "poisson", "scale": scale}
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), op


def blur(img: np.ndarray, rng: np.random.Generator, r: DegradeRanges) -> tuple[np.ndarray, dict]:
    import cv2

    sx = float(rng.uniform(*r.blur_sigma))
    if rng.random() < 0.5:
        sy, angle, kind = sx, 0.0, "isotropic"
    else:
        sy, angle, kind = float(rng.uniform(*r.blur_sigma)), float(rng.uniform(0, np.pi)), "anisotropic"
    k = gaussian_kernel(sx, sy, angle)
    out = cv2.filter2D(img, -1, k.astype(np.float32), borderType=cv2.BORDER_REFLECT)
    return out, {"op": "blur", "kind": kind, "sigma_x": sx, "sigma_y": sy, "angle": angle, "ksize": k.shape[0]}


def jpeg(img: np.ndarray, rng: np.random.Generator, r: DegradeRanges) -> tuple[np.ndarray, dict]:
    import cv2

    q = int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write JPEG")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]), {"op": "jpeg", "quality": q}


_INTERP = ("area", "linear", "cubic")


def down_up(img: np.ndarray, rng: np.random.Generator, r: DegradeRanges) -> tuple[np.ndarray, dict]:
    import cv2

    h, w = img.shape[:2]
    f = float(rng.uniform(*r.down_factor))
    down, up = (_INTERP[int(i)] for i in rng.integers(0, 3, 2))
    codes = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
    small = cv2.resize(img, (max(1, round(w / f)), max(1, round(h / f))), interpolation=codes[down])
    out = cv2.resize(small, (w, h), interpolation=codes[up])
    return out, {"op": "resize", "factor": f, "down": down, "up": up}


_APPLY = {"noise": add_noise, "blur": blur, "jpeg": jpeg, "resize": down_up}


def degrade(img: np.ndarray, rng: np.random.Generator, r: DegradeRanges | None = None) -> tuple[np.ndarray, list[dict]]:
    """(degraded image, the operations applied in order with their parameters)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"degrade takes an RGB uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
    r = r or DegradeRanges()
    chosen = [o for o in r.ops if rng.random() < r.p_op]
    if not chosen:
        chosen = [r.ops[int(rng.integers(len(r.ops)))]]
    order = [chosen[i] for i in rng.permutation(len(chosen))]
    ops = []
    out = img
    for name in order:
        out, op = _APPLY[name](out, rng, r)
        ops.append(op)
    return out, ops


def restoration_verb(ops: list[dict]) -> str:
    """What undoing `ops` is called: denoise, deblur or upscale for one kind of damage, restore otherwise."""
    kinds = {o["op"] for o in ops}
    if len(kinds) == 1:
        return {"noise": "denoise", "blur": "deblur", "resize": "upscale", "jpeg": "restore"}[kinds.pop()]
    return "restore"


def op_scores(ops: list[dict]) -> dict[str, float]:
    """The recorded operations as flat numeric scores for lineage: `deg<i>_<op>_<param>`."""
    out: dict[str, float] = {}
    for i, o in enumerate(ops):
        out[f"deg{i}_{o['op']}"] = 1.0
        for k, v in o.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"deg{i}_{o['op']}_{k}"] = float(v)
            elif k == "kind":
                out[f"deg{i}_{o['op']}_{v}"] = 1.0
    return out
