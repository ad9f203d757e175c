from functools import partial

import numpy as np
import pytest
import torch

from mining.models.embedders import MissingModelError
from mining.objects.segment import ChecksumError, RegionProposer, SamSegmenter, file_md5, make_segmenter, sam_path


def tiny_sam():
    """segment-anything's own classes at toy sizes (173k parameters)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, size = 32, 256
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                                      out_chans=dim, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      window_size=4, global_attn_indexes=(1,), use_rel_pos=True),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // 16, size // 16),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim,
                                                                                      mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    torch.manual_seed(0)
    path = sam_path(tmp_path_factory.mktemp("models"), "vit_b")
    path.parent.mkdir(parents=True)
    torch.save(tiny_sam().state_dict(), path)
    return path


def _image(h=72, w=96):
    img = np.full((h, w, 3), 200, np.uint8)
    img[20:50, 30:60] = (200, 30, 30)
    return img


def test_tiny_sam_loads_through_the_real_path_and_segments(sam_file):
    seg = SamSegmenter(sam_file, "vit_b", md5=file_md5(sam_file), build=tiny_sam, points_per_side=4,
                       pred_iou_thresh=0.0, stability_score_thresh=0.0)
    img = _image()
    regions = seg(img)
    assert regions and all(r.mask.shape == img.shape[:2] and r.mask.dtype == bool for r in regions)
    boxed = seg.prompt(img, boxes=np.array([[30, 20, 60, 50]]))
    pointed = seg.prompt(img, points=np.array([[45, 35]]))
    assert len(boxed) == 1 and len(pointed) == 1 and boxed[0].mask.shape == img.shape[:2]
    assert seg.name == "sam-vit_b" and seg.version == file_md5(sam_file)[:12]


def test_a_checkpoint_with_another_checksum_is_refused(sam_file):
    with pytest.raises(ChecksumError, match="refusing"):
        SamSegmenter(sam_file, "vit_b", build=tiny_sam).setup()  # the pinned md5 of the released vit_b


def test_missing_sam_names_the_file_and_auto_falls_back(tmp_path):
    with pytest.raises(MissingModelError, match="sam_vit_b_01ec64.pth"):
        SamSegmenter(sam_path(tmp_path, "vit_b")).setup()
    assert isinstance(make_segmenter("auto", tmp_path), RegionProposer)
    assert isinstance(make_segmenter("sam", tmp_path), SamSegmenter)


def test_region_proposer_finds_a_contrasting_object():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(120, 6, (96, 128, 3)), 0, 255).astype(np.uint8)
    obj = np.zeros((96, 128), bool)
    obj[30:60, 40:80] = True
    img[obj] = (220, 40, 40)
    regions = RegionProposer()(img)
    best = max(regions, key=lambda r: (r.mask & obj).sum() / (r.mask | obj).sum())
    assert (best.mask & obj).sum() / (best.mask | obj).sum() > 0.8 and best.score > 0.5
