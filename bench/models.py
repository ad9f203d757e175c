"""Per model: images/s and peak memory of our wrapper (the code the stages run) beside the bare library call on
the same inputs, for the full-size architectures with random weights (bench/_fullsize.py; the released files
load the same way). Each side runs in its own child process, so peak memory is its own (peak RSS; on CUDA also
the peak of allocated GPU memory).

    python bench/models.py                       # every model, CPU, 2 demo images at their own size
    python bench/models.py --only siglip depth   # some
    python bench/models.py --device cuda --images 8
    python bench/models.py --tiny                # toy sizes of the same classes (a smoke check)

Models: sam (automatic masks, 16 points, and one box prompt; 1024 px), owlv2 (960 px), siglip (224 px), depth
(Depth-Anything-V2-Small, 518 px), hed. What each side does:
- ours: SamSegmenter / OpenVocabDetector / SiglipEmbedder / DepthEstimator / HedEdges, loaded from the models
  directory (checksums included), called as the stages call them;
- bare: segment-anything's SamAutomaticMaskGenerator + SamPredictor, transformers' processor + model +
  post-processing, open_clip's transforms + encode_image, transformers' DPT processor + model, HedNet forward.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("sam", "owlv2", "siglip", "depth", "hed")
VOCAB = ("person", "cat", "rocket", "cup", "dog", "car", "chair", "book")


def images(n: int, tiny: bool):
    import numpy as np
    import skimage.data

    names = ("astronaut", "chelsea", "coffee", "rocket")
    out = []
    for i in range(n):
        a = getattr(skimage.data, names[i % len(names)])()
        a = a if a.ndim == 3 else np.stack([a] * 3, -1)
        out.append(np.ascontiguousarray(a[::8, ::8] if tiny else a))
    return out


def build(models: Path, which: list[str], tiny: bool) -> dict:
    from bench import _fullsize as F

    info = {}
    for m in which:
        if m == "sam":
            F.save_sam_vit_b(models, tiny)
        elif m == "owlv2":
            F.save_owlv2_base(models, tiny)
        elif m == "siglip":
            F.save_siglip_b16(models, tiny)
        elif m == "depth":
            F.save_depth_anything_v2_small(models, tiny=tiny)
        elif m == "hed":
            info["hed_sha256"] = F.save_hed(models, tiny)
    return info


def _runner(model: str, side: str, models: Path, device: str, tiny: bool, info: dict):
    """(setup, call) for one side: call(list of RGB arrays) processes them all."""
    import numpy as np
    import torch

    from bench import _fullsize as F

    if model == "sam":
        from mining.objects.segment import SamSegmenter, file_md5, sam_path

        path = sam_path(models, "vit_b")
        if side == "ours":
            seg = SamSegmenter(path, "vit_b", md5=file_md5(path), build=F.sam_builder(tiny), device=device,
                               points_per_side=4)

            def call(imgs):
                for im in imgs:
                    seg(im)
                    h, w = im.shape[:2]
                    seg.prompt(im, boxes=np.array([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]], np.float32))
            return seg.setup, call
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        state = {}

        def setup():
            net = F.sam_builder(tiny)()
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            state["net"] = net.to(device).eval()
            state["auto"] = SamAutomaticMaskGenerator(state["net"], points_per_side=4)

        def call(imgs):
            with torch.inference_mode():
                for im in imgs:
                    state["auto"].generate(im)
                    pred = SamPredictor(state["net"])
                    pred.set_image(im)
                    h, w = im.shape[:2]
                    pred.predict(box=np.array([w * 0.25, h * 0.25, w * 0.75, h * 0.75], np.float32),
                                 multimask_output=True)
        return setup, call
    if model == "owlv2":
        from mining.objects.detect import DETECTOR_MODEL, OpenVocabDetector, detector_dir

        folder = detector_dir(models, DETECTOR_MODEL)
        if side == "ours":
            det = OpenVocabDetector(folder, VOCAB, threshold=0.1, device=device)
            return det.setup, lambda imgs: [det(im) for im in imgs]
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        state = {}

        def setup():
            state["p"] = AutoProcessor.from_pretrained(str(folder))
            state["m"] = AutoModelForZeroShotObjectDetection.from_pretrained(str(folder)).to(device).eval()

        def call(imgs):
            texts = [f"a photo of a {v}" for v in VOCAB]
            for im in imgs:
                inp = state["p"](text=[texts], images=[im], return_tensors="pt").to(device)
                with torch.inference_mode():
                    out = state["m"](**inp)
                side_ = max(im.shape[:2])
                state["p"].post_process_grounded_object_detection(out, threshold=0.1,
                                                                  target_sizes=torch.tensor([[side_, side_]]))
        return setup, call
    if model == "siglip":
        from PIL import Image

        from mining.models.embedders import SiglipEmbedder, siglip_dir

        if side == "ours":
            emb = SiglipEmbedder(models, device=device)
            return emb.setup, lambda imgs: emb([Image.fromarray(i) for i in imgs])
        import open_clip

        state = {}

        def setup():
            m, _, pre = open_clip.create_model_and_transforms(f"local-dir:{siglip_dir(models)}")
            state["m"], state["pre"] = m.visual.to(device).eval(), pre

        def call(imgs):
            x = torch.stack([state["pre"](Image.fromarray(i)) for i in imgs]).to(device)
            with torch.inference_mode():
                torch.nn.functional.normalize(state["m"](x), dim=-1).cpu()
        return setup, call
    if model == "depth":
        from mining.maps.depth import DepthEstimator, depth_dir

        if side == "ours":
            est = DepthEstimator(models, device=device)
            return est.setup, lambda imgs: [est(im) for im in imgs]
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        folder = depth_dir(models, "depth-anything-v2-small")
        state = {}

        def setup():
            state["p"] = AutoImageProcessor.from_pretrained(str(folder))
            state["m"] = AutoModelForDepthEstimation.from_pretrained(str(folder)).to(device).eval()

        def call(imgs):
            for im in imgs:
                inp = state["p"](images=im, return_tensors="pt").to(device)
                with torch.inference_mode():
                    out = state["m"](**inp)
                state["p"].post_process_depth_estimation(out, target_sizes=[im.shape[:2]])
        return setup, call
    if model == "hed":
        from mining.maps.hed import HedEdges, HedNet, edges_from_sides, hed_path

        if side == "ours":
            hed = HedEdges(models, info["hed_sha256"], device=device)
            return hed.setup, lambda imgs: [hed(im) for im in imgs]
        state = {}

        def setup():
            net = HedNet()
            net.load_state_dict(torch.load(hed_path(models), map_location="cpu", weights_only=True))
            state["net"] = net.to(device).eval()

        def call(imgs):
            for im in imgs:
                x = torch.from_numpy(im).permute(2, 0, 1)[None].float().to(device)
                with torch.inference_mode():
                    edges_from_sides(state["net"](x), *im.shape[:2]).cpu()
        return setup, call
    raise ValueError(f"unknown model {model!r}; use {', '.join(MODELS)}")


def child(model: str, side: str, models: Path, device: str, n: int, tiny: bool, rounds: int, info: dict) -> dict:
    import torch

    torch.manual_seed(0)
    imgs = images(n, tiny)
    setup, call = _runner(model, side, models, device, tiny, info)
    setup()
    call(imgs[:1])  # warm-up (first-call allocations, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        call(imgs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    out = {"model": model, "side": side, "device": device, "images": n, "images_per_s": n / best,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure(models: Path, which: list[str], device: str, n: int, tiny: bool, rounds: int, info: dict,
            inprocess: bool = False) -> list[dict]:
    """One child process per model and side (peak memory its own); `inprocess`: all here (a smoke check:
    the peak memory is then the process's, shared by every row)."""
    rows = []
    for m in which:
        for side in ("bare", "ours"):
            if inprocess:
                rows.append(child(m, side, models, device, n, tiny, rounds, info))
                continue
            cmd = [sys.executable, __file__, "--child", m, side, "--models-dir", str(models), "--device", device,
                   "--images", str(n), "--rounds", str(rounds), "--info", json.dumps(info)] + (["--tiny"] if tiny else [])
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{m} {side} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict]) -> list[str]:
    gpu = any("peak_gpu_mb" in r for r in rows)
    head = f"{'model':<8} {'device':<6} {'side':<5} {'img/s':>8} {'peak RSS MB':>12}" + (" peak GPU MB" if gpu else "")
    lines = [head]
    for r in rows:
        lines.append(f"{r['model']:<8} {r['device']:<6} {r['side']:<5} {r['images_per_s']:>8.3f} "
                     f"{r['peak_rss_mb']:>12.0f}" + (f" {r.get('peak_gpu_mb', 0):>11.0f}" if gpu else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="toy sizes of the same classes (a smoke check)")
    ap.add_argument("--models-dir", default=None, help="reuse a folder of built models (built when empty)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "SIDE"), help=argparse.SUPPRESS)
    ap.add_argument("--info", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], Path(a.models_dir), a.device, a.images, a.tiny, a.rounds,
                               json.loads(a.info))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(a.models_dir or tmp)
        info = build(models, a.only, a.tiny)
        rows = measure(models, a.only, a.device, a.images, a.tiny, a.rounds, info)
    print("\n".join(table(rows)))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
