import numpy as np
import pytest
import torch

from mining.objects.inpaint import Cv2Inpainter, LamaInpainter, dilate, lama_path, make_inpainter
from mining.objects.segment import ChecksumError, file_md5


class FillWithMean(torch.nn.Module):
    """LaMa's call signature: (image [1,3,H,W] in 0..1, mask [1,1,H,W] in {0,1}) -> [1,3,H,W]; it fills the
    mask with the mean colour outside it, and deliberately shifts every pixel outside the mask too."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - mask
        mean = (image * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        return (image * keep + mean * mask + 0.1).clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def lama_file(tmp_path_factory):
    path = lama_path(tmp_path_factory.mktemp("models"))
    path.parent.mkdir(parents=True)
    torch.jit.script(FillWithMean()).save(str(path))
    return path


def _scene(h=45, w=61):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:25, 20:40] = True
    return img, mask


def test_scripted_lama_stand_in_loads_through_the_real_path(lama_file):
    img, mask = _scene()  # 45 x 61: padded to 48 x 64 inside, cropped back
    lama = LamaInpainter(lama_file, md5=file_md5(lama_file))
    out = lama(img, mask)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], img[~mask])  # the model's shift outside the mask never leaks through
    assert not np.array_equal(out[mask], img[mask]) and out[mask].std(axis=0).max() < 1.0  # one fill colour


def test_lama_with_another_checksum_is_refused(lama_file):
    with pytest.raises(ChecksumError, match="e3aa4aaa15225a33ec84f9f4bc47e500"):
        LamaInpainter(lama_file).setup()


def test_cv2_fallback_changes_only_the_mask_and_auto_picks_by_file(tmp_path, lama_file):
    img, mask = _scene()
    out = Cv2Inpainter()(img, mask)
    assert np.array_equal(out[~mask], img[~mask]) and not np.array_equal(out[mask], img[mask])
    assert isinstance(make_inpainter("auto", tmp_path), Cv2Inpainter)
    assert isinstance(make_inpainter("auto", lama_file.parent.parent), LamaInpainter)


def test_dilate_grows_the_mask_by_its_radius():
    m = np.zeros((21, 21), bool)
    m[10, 10] = True
    d = dilate(m, 3)
    assert d[10, 7] and d[10, 13] and not d[10, 6] and d.sum() > 20 and dilate(m, 0).sum() == 1
