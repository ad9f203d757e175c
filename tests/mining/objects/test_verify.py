import numpy as np

from mining.objects.inpaint import Cv2Inpainter
from mining.objects.verify import verify_removal
from schemas.config import VerifyConfig


def _scene():
    yy, xx = np.mgrid[0:80, 0:100]
    img = np.stack([(xx * 2) % 256, (yy * 3) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
    mask = np.zeros((80, 100), bool)
    mask[25:55, 30:70] = True
    img[mask] = (250, 250, 250)  # the object
    return img, mask


def test_a_smooth_fill_passes_and_each_failure_has_its_reason():
    img, mask = _scene()
    cfg = VerifyConfig()
    good = Cv2Inpainter()(img, mask)
    assert verify_removal(img, good, mask, cfg)[0] is None
    assert verify_removal(img, img.copy(), mask, cfg)[0] == "unchanged"
    leaked = good.copy()
    leaked[0, 0] ^= 1
    assert verify_removal(img, leaked, mask, cfg)[0] == "outside_changed"
    seam = img.copy()
    seam[mask] = (0, 0, 0)  # a hard black patch: the border's gradient far above the image's own
    reason, scores = verify_removal(img, seam, mask, cfg)
    assert reason == "seam" and scores["seam_ratio"] > cfg.max_seam_ratio


def test_refound_iou_is_the_best_overlap_with_the_removed_mask():
    from mining.objects.segment import Region
    from mining.objects.verify import refound_iou

    _, mask = _scene()
    shifted = np.roll(mask, 10, axis=1)
    assert refound_iou([Region(mask.copy(), 1.0), Region(~mask, 1.0)], mask) == 1.0
    assert abs(refound_iou([Region(shifted, 1.0)], mask) - 30 * 30 / (30 * 50)) < 1e-9
    assert refound_iou([], mask) == 0.0
