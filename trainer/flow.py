"""Rectified-flow objective as pure functions.

x_t = (1 - sigma) x0 + sigma eps, the model predicts the velocity eps - x0, sigma is logit-normal
(optionally shifted towards noise), the FLUX transformer gets timestep = sigma, guidance 1.0 in training.
"""

from __future__ import annotations

import torch


def logit_normal_sigmas(n: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
                        shift: float = 1.0) -> torch.Tensor:
    """sigma = sigmoid(u), u ~ N(mean, std); shift > 1 moves mass towards noise: s*sigma / (1 + (s-1)*sigma)."""
    u = torch.randn(n, generator=generator) * std + mean
    return shift_sigmas(torch.sigmoid(u), shift)


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def noisy(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def token_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(b, L, c) -> (b, L): squared error per token, in fp32."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


def split_loss(per_token: torch.Tensor, is_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_ref, L_tar): mean error over reference tokens and over target tokens (0 where there are none)."""
    tar = is_target.to(per_token.dtype)
    ref = 1 - tar
    l_tar = (per_token * tar).sum() / tar.sum().clamp(min=1)
    l_ref = (per_token * ref).sum() / ref.sum().clamp(min=1)
    return l_ref, l_tar
