"""The HED network (the architecture of ControlNet's annotator file ControlNetHED.pth) and its edge map: apart
from the wrapper (mining/maps/hed.py) so that importing the wrapper does not import torch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# (in, out, convs) of the five stages; the stages after the first start with a 2x2 max-pool
STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


class _Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1) for i in range(n)])
        self.projection = nn.Conv2d(c_out, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HedNet(nn.Module):
    """The architecture of the released file (its state-dict keys)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for k, (c_in, c_out, n) in enumerate(STAGES, start=1):
            setattr(self, f"block{k}", _Stage(c_in, c_out, n))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (b, 3, H, W) RGB in 0..255; the five side outputs (logits) at their own scales."""
        h = x - self.norm
        sides = []
        for k in range(1, len(STAGES) + 1):
            h, side = getattr(self, f"block{k}")(h, pool=k > 1)
            sides.append(side)
        return sides


def edges_from_sides(sides: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
    """(b, h, w) in 0..1: each side output upsampled (bilinear) to the input size, sigmoid, averaged."""
    up = [torch.sigmoid(F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)) for s in sides]
    return torch.stack(up).mean(0)[:, 0]
