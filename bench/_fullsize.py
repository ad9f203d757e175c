"""Full-size model files with random weights, written where `aceforge models pull` puts the released ones and in
the released format, so the normal loading path reads them: each built from its library's own classes at the
released configuration (weights cannot be downloaded here; the shapes, sizes and compute are the real ones).

- SAM vit_b: segment-anything's `build_sam_vit_b` (1024 px), a state dict saved with torch.save (.pth);
- SigLIP ViT-B-16 at 224: open_clip's `ViT-B-16-SigLIP` config, open_clip_config.json + safetensors (the
  `timm/ViT-B-16-SigLIP` repository's layout, read with `local-dir:`);
- Depth-Anything-V2-Small: transformers' DepthAnything classes at the released config (DINOv2 small backbone),
  config.json + model.safetensors + preprocessor_config.json;
- HED: mining/maps/hed.py's HedNet (the ControlNet annotator's layout), a state dict .pth;
- OWLv2 base/16 (960 px): transformers' Owlv2 classes at the released base config, saved with
  save_pretrained, CLIP's BPE tokenizer (rebuilt offline from open_clip's vocabulary file).
Each `save_*` returns what a config needs to use it (a path; HED: its sha256 to pin).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def save_sam_vit_b(models: Path) -> Path:
    from segment_anything import build_sam_vit_b

    from mining.objects.segment import sam_path

    path = sam_path(models, "vit_b")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_sam_vit_b(checkpoint=None).state_dict(), path)
    return path


def save_siglip_b16(models: Path) -> Path:
    import open_clip
    from safetensors.torch import save_file

    from mining.models.embedders import SIGLIP_FILES, SIGLIP_MODEL, siglip_dir

    folder = siglip_dir(models, SIGLIP_MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": open_clip.get_model_config("ViT-B-16-SigLIP"),
           "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                              "resize_mode": "squash"}}
    (folder / SIGLIP_FILES[0]).write_text(json.dumps(cfg))
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / SIGLIP_FILES[1]))
    return folder


def depth_anything_v2_small_config():
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, patch_size=14,
                            image_size=518, mlp_ratio=4, layerscale_value=1.0,
                            out_indices=[3, 6, 9, 12], reshape_hidden_states=False, apply_layernorm=True)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=384,
                               reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                               fusion_hidden_size=64, head_in_index=-1, head_hidden_size=32,
                               depth_estimation_type="relative")


def save_depth_anything_v2_small(models: Path, name: str = "depth-anything-v2-small") -> Path:
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessor

    from mining.maps.depth import depth_dir

    folder = depth_dir(models, name)
    DepthAnythingForDepthEstimation(depth_anything_v2_small_config()).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def save_hed(models: Path) -> str:
    from mining.maps.hed import HedNet, hed_path

    path = hed_path(models)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(HedNet().state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_owlv2_base(models: Path) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from mining.objects.detect import DETECTOR_MODEL, detector_dir
    from trainer.components import tiny_clip_tokenizer

    folder = detector_dir(models, DETECTOR_MODEL)
    # base/16 at 960 px (the released vision config; the class default is 768 px)
    Owlv2ForObjectDetection(Owlv2Config(vision_config={"image_size": 960})).eval().save_pretrained(folder)
    tok = tiny_clip_tokenizer()  # CLIP's full BPE vocabulary (49,408), as the released tokenizer
    tok.model_max_length = 16
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 960, "width": 960}),
                   tokenizer=tok).save_pretrained(folder)
    return folder


def param_count(path: Path) -> int:
    """Parameters in a saved model folder (its safetensors) or .pth state dict: the sizes are the released ones."""
    import math

    p = Path(path)
    if p.is_dir():
        from safetensors import safe_open

        n = 0
        for f in p.glob("*.safetensors"):
            with safe_open(str(f), "pt") as s:
                n += sum(math.prod(s.get_slice(k).get_shape()) for k in s.keys())
        return n
    return sum(v.numel() for v in torch.load(p, map_location="cpu", weights_only=True).values())
