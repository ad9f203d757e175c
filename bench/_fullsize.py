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
Each `save_*` returns what a config needs to use it (a path; HED: its sha256 to pin); `tiny=True` writes the
same classes at toy sizes (bench/gpu.py --dry-run, so the benchmark code runs in CI).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def tiny_sam():
    """segment-anything's classes at toy sizes (256 px): the --tiny / --dry-run stand-in for vit_b."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, size = 32, 256
    return Sam(image_encoder=ImageEncoderViT(img_size=size, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                                             out_chans=dim, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                             window_size=4, global_attn_indexes=(1,), use_rel_pos=True),
               prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // 16, size // 16),
                                            input_image_size=(size, size), mask_in_chans=4),
               mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                   depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2), transformer_dim=dim, iou_head_depth=2,
                   iou_head_hidden_dim=32),
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def sam_builder(tiny: bool = False):
    from segment_anything import build_sam_vit_b

    return tiny_sam if tiny else (lambda: build_sam_vit_b(checkpoint=None))


def save_sam_vit_b(models: Path, tiny: bool = False) -> Path:
    from mining.objects.segment import sam_path

    path = sam_path(models, "vit_b")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam_builder(tiny)().state_dict(), path)
    return path


TINY_SIGLIP = {"embed_dim": 32, "init_logit_bias": -2.0,
               "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def save_siglip_b16(models: Path, tiny: bool = False) -> Path:
    import open_clip
    from safetensors.torch import save_file

    from mining.models.embedders import SIGLIP_FILES, SIGLIP_MODEL, siglip_dir

    folder = siglip_dir(models, SIGLIP_MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": TINY_SIGLIP if tiny else open_clip.get_model_config("ViT-B-16-SigLIP"),
           "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                              "resize_mode": "squash"}}
    (folder / SIGLIP_FILES[0]).write_text(json.dumps(cfg))
    model = open_clip.create_model(f"local-dir:{folder}") if tiny else open_clip.create_model("ViT-B-16-SigLIP",
                                                                                              pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / SIGLIP_FILES[1]))
    return folder


def depth_anything_v2_small_config(tiny: bool = False):
    from transformers import DepthAnythingConfig, Dinov2Config

    if tiny:
        backbone = Dinov2Config(hidden_size=32, num_attention_heads=2, num_hidden_layers=4, patch_size=14,
                                image_size=56, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
        return DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                                   reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[8, 16, 32, 32],
                                   fusion_hidden_size=16, head_hidden_size=8)
    backbone = Dinov2Config(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, patch_size=14,
                            image_size=518, mlp_ratio=4, layerscale_value=1.0,
                            out_indices=[3, 6, 9, 12], reshape_hidden_states=False, apply_layernorm=True)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=384,
                               reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                               fusion_hidden_size=64, head_in_index=-1, head_hidden_size=32,
                               depth_estimation_type="relative")


def save_depth_anything_v2_small(models: Path, name: str = "depth-anything-v2-small", tiny: bool = False) -> Path:
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessor

    from mining.maps.depth import depth_dir

    folder = depth_dir(models, name)
    side = 56 if tiny else 518
    DepthAnythingForDepthEstimation(depth_anything_v2_small_config(tiny)).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def save_hed(models: Path, tiny: bool = False) -> str:
    """HedNet has one size (14.7 M parameters): `tiny` changes nothing."""
    from mining.maps.hed import HedNet, hed_path

    path = hed_path(models)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(HedNet().state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_owlv2_base(models: Path, tiny: bool = False) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from mining.objects.detect import DETECTOR_MODEL, detector_dir
    from trainer.components import tiny_clip_tokenizer

    folder = detector_dir(models, DETECTOR_MODEL)
    side = 64 if tiny else 960
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    # base/16 at 960 px (the released vision config; the class default is 768 px)
    cfg = (Owlv2Config(text_config={**small, "max_position_embeddings": 16},
                       vision_config={**small, "image_size": side, "patch_size": 16}, projection_dim=32)
           if tiny else Owlv2Config(vision_config={"image_size": side}))
    Owlv2ForObjectDetection(cfg).eval().save_pretrained(folder)
    tok = tiny_clip_tokenizer()  # CLIP's full BPE vocabulary (49,408), as the released tokenizer
    tok.model_max_length = 16
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": side, "width": side}),
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
