import cv2
import numpy as np
import pytest
import skimage.data

from mining.image.degrade import (DegradeRanges, add_noise, blur, degrade, down_up, gaussian_kernel, jpeg, op_scores,
                            restoration_verb)


@pytest.fixture(scope="module")
def img():
    return np.ascontiguousarray(cv2.resize(skimage.data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA))


def test_same_seed_same_output_and_ops(img):
    a, ops_a = degrade(img, np.random.default_rng(5))
    b, ops_b = degrade(img, np.random.default_rng(5))
    assert np.array_equal(a, b) and ops_a == ops_b
    assert a.shape == img.shape and a.dtype == np.uint8 and not np.array_equal(a, img)


def test_order_and_subset_vary_with_the_seed(img):
    orders = {tuple(o["op"] for o in degrade(img, np.random.default_rng(s))[1]) for s in range(40)}
    assert len(orders) > 8
    assert any(len(o) > 1 and list(o) != sorted(o, key=("noise", "blur", "jpeg", "resize").index) for o in orders)


def test_the_recorded_ops_replay_to_the_same_image(img):
    out, ops = degrade(img, np.random.default_rng(11), DegradeRanges(ops=("blur", "resize"), p_op=1.0))
    x = img
    for o in ops:  # rebuild from the record alone
        if o["op"] == "blur":
            x = cv2.filter2D(x, -1, gaussian_kernel(o["sigma_x"], o["sigma_y"], o["angle"]).astype(np.float32),
                             borderType=cv2.BORDER_REFLECT)
        else:
            codes = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
            small = cv2.resize(x, (round(96 / o["factor"]), round(96 / o["factor"])), interpolation=codes[o["down"]])
            x = cv2.resize(small, (96, 96), interpolation=codes[o["up"]])
    assert np.array_equal(out, x)


def test_kernels_isotropic_and_anisotropic():
    k = gaussian_kernel(2.0, 2.0, 0.3)
    assert k.shape[0] % 2 == 1 and abs(k.sum() - 1) < 1e-9 and np.allclose(k, k.T)
    a = gaussian_kernel(3.0, 0.8, 0.0)  # wide along x
    assert a[a.shape[0] // 2].sum() > a[:, a.shape[1] // 2].sum()


def test_each_op_damages_in_its_own_way(img):
    r = DegradeRanges()
    rng = np.random.default_rng(0)
    noisy, o = add_noise(img, rng, r)
    assert o["op"] == "noise" and np.abs(noisy.astype(int) - img).mean() > 0.5
    blurred, o = blur(img, rng, r)
    lap = lambda x: cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert lap(blurred) < lap(img)
    j, o = jpeg(img, rng, r)
    assert 15 <= o["quality"] <= 60 and not np.array_equal(j, img)
    d, o = down_up(img, rng, r)
    assert d.shape == img.shape and 1.5 <= o["factor"] <= 4.0 and np.abs(d.astype(int) - img).mean() > 1


def test_verbs_and_scores():
    assert restoration_verb([{"op": "noise"}]) == "denoise"
    assert restoration_verb([{"op": "blur"}]) == "deblur"
    assert restoration_verb([{"op": "resize"}]) == "upscale"
    assert restoration_verb([{"op": "noise"}, {"op": "jpeg"}]) == "restore"
    s = op_scores([{"op": "jpeg", "quality": 30}, {"op": "noise", "kind": "gaussian", "sigma": 4.0}])
    assert s == {"deg0_jpeg": 1.0, "deg0_jpeg_quality": 30.0, "deg1_noise": 1.0, "deg1_noise_gaussian": 1.0,
                 "deg1_noise_sigma": 4.0}


def test_bad_input():
    with pytest.raises(ValueError, match="RGB uint8"):
        degrade(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="subset"):
        DegradeRanges(ops=("smear",))
