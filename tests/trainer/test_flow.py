import torch

from trainer.flow import logit_normal_sigmas, noisy, shift_sigmas, split_loss, token_mse, velocity_target


def test_interpolation_and_target_by_hand():
    x0 = torch.tensor([[2.0, -1.0]])
    eps = torch.tensor([[0.0, 3.0]])
    xt = noisy(x0, eps, torch.tensor([0.25]))
    assert torch.allclose(xt, torch.tensor([[1.5, 0.0]]))  # 0.75*x0 + 0.25*eps
    assert torch.equal(velocity_target(x0, eps), torch.tensor([[-2.0, 4.0]]))
    assert torch.equal(noisy(x0, eps, torch.tensor([0.0])), x0) and torch.equal(noisy(x0, eps, torch.tensor([1.0])), eps)


def test_sigma_distribution_and_shift():
    s = logit_normal_sigmas(20000, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() < 1 and abs(s.median().item() - 0.5) < 0.02
    assert torch.allclose(shift_sigmas(torch.tensor([0.5]), 3.0), torch.tensor([0.75]))  # 1.5 / 2
    shifted = logit_normal_sigmas(20000, torch.Generator().manual_seed(0), shift=3.0)
    assert shifted.mean() > s.mean() and torch.all(shifted >= s - 1e-6)
    same = logit_normal_sigmas(5, torch.Generator().manual_seed(1))
    assert torch.equal(same, logit_normal_sigmas(5, torch.Generator().manual_seed(1)))


def test_split_loss_by_hand():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]]])
    tgt = torch.zeros_like(pred)
    per = token_mse(pred, tgt)
    assert torch.allclose(per, torch.tensor([[1.0, 0.0, 2.0]]))
    l_ref, l_tar = split_loss(per, torch.tensor([[False, True, True]]))
    assert torch.isclose(l_ref, torch.tensor(1.0)) and torch.isclose(l_tar, torch.tensor(1.0))
    l_ref, l_tar = split_loss(per, torch.tensor([[True, True, True]]))
    assert l_ref == 0 and torch.isclose(l_tar, torch.tensor(1.0))
