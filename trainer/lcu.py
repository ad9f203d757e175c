"""LCU++: from an AceSample's images to FLUX.1-Fill model inputs, in two forms.

A sample becomes panels: context panels (references) with mask 0, then one target panel. The target
panel's condition is the edit image under its mask, shown as `edit * (1 - repainting_scale * mask)` (the
released ACE++ condition; the scale is per task, see TrainConfig.repainting_scale). A mask-less edit keeps
its edit image in place under a full mask (layout `in_place`, as released: with scale 0.5 the model sees the
source at half strength), or, with layout `panel`, moves it to a context panel of its own left of a blank
target (mask 1 everywhere). A sample with no edit image has a blank condition under a full mask. Every
panel's tokens are denoised; the loss covers all of them.

canvas    the released ACE++ layout: panels side by side on one canvas (context left, target right), one
          token grid, loss over the whole canvas. This is what FluxFillPipeline inference expects.
sequence  the paper's form: each panel packed on its own as [I; M; X_t], unit tokens concatenated along the
          sequence, position-id axis 0 = unit index (target 0, context 1..n) to keep units apart; the loss
          is L_ref + L_tar.
A 0-ref sample whose edit image stays in place is a single target panel: both forms give the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.packing import PIXELS_PER_TOKEN_SIDE, encode, fill_condition, image_ids, pack

FORMS = ("canvas", "sequence")


@dataclass
class Panel:
    image: torch.Tensor  # (3, H, W) in [-1, 1]: what this panel's tokens must reconstruct
    cond: torch.Tensor  # (3, H, W) in [-1, 1]: the image the condition shows (times 1 - repainting_scale * mask)
    mask: torch.Tensor  # (1, H, W) in {0, 1}: 1 = generate
    is_target: bool


@dataclass
class LcuInputs:
    x0: torch.Tensor  # (b, L, 64) packed clean latents
    cond: torch.Tensor  # (b, L, 320) packed masked-image latents + mask tokens (384 with the modify latents)
    img_ids: torch.Tensor  # (L, 3)
    is_target: torch.Tensor  # (L,) bool

    @property
    def tokens(self) -> int:
        return self.x0.shape[1]


def _check(panels: list[Panel]) -> None:
    if sum(p.is_target for p in panels) != 1 or not panels[-1].is_target:
        raise ValueError("exactly one target panel, last")
    for p in panels:
        h, w = p.image.shape[-2:]
        if h % PIXELS_PER_TOKEN_SIDE or w % PIXELS_PER_TOKEN_SIDE:
            raise ValueError(f"panel size {w}x{h} is not a multiple of {PIXELS_PER_TOKEN_SIDE}")
        if p.cond.shape != p.image.shape or p.mask.shape[-2:] != (h, w):
            raise ValueError("panel image, condition and mask must share a size")


@torch.no_grad()
def build_inputs(panels: list[Panel], form: str, vae, repainting_scale: float = 1.0,
                 generator: torch.Generator | None = None, modify: bool = False) -> LcuInputs:
    """Model inputs of one sample. `repainting_scale`: the hint scale of the sample's task (context panels
    have mask 0, so one scale serves the whole canvas); `generator`: sample VAE latents (else their mean);
    `modify`: the 448-channel layout of the released full fine-tune (packing.fill_condition)."""
    _check(panels)
    dev, dt = next(vae.parameters()).device, next(vae.parameters()).dtype
    if form == "canvas":
        heights = {p.image.shape[-2] for p in panels}
        if len(heights) != 1:
            raise ValueError(f"canvas panels must share a height, got {sorted(heights)}")
        image = torch.cat([p.image for p in panels], dim=-1)[None].to(dev, dt)
        cond = torch.cat([p.cond for p in panels], dim=-1)[None].to(dev, dt)
        mask = torch.cat([p.mask for p in panels], dim=-1)[None].to(dev, dt)
        h, w = image.shape[-2] // 8, image.shape[-1] // 8
        target_cols = torch.cat([torch.full((p.image.shape[-1] // PIXELS_PER_TOKEN_SIDE,), p.is_target)
                                 for p in panels])
        is_target = target_cols[None, :].expand(h // 2, -1).reshape(-1)
        x0 = pack(encode(vae, image, generator))
        return LcuInputs(x0, fill_condition(vae, cond, mask, repainting_scale, generator, modify), image_ids(h, w),
                         is_target)
    if form == "sequence":
        x0s, conds, ids, flags = [], [], [], []
        order = [panels[-1]] + panels[:-1]  # target first: unit index 0, as in a single-panel sample
        for index, p in enumerate(order):
            image, cond, mask = (t[None].to(dev, dt) for t in (p.image, p.cond, p.mask))
            h, w = image.shape[-2] // 8, image.shape[-1] // 8
            x0s.append(pack(encode(vae, image, generator)))
            conds.append(fill_condition(vae, cond, mask, repainting_scale, generator, modify))
            ids.append(image_ids(h, w, index=index))
            flags.append(torch.full((h // 2 * (w // 2),), p.is_target))
        return LcuInputs(torch.cat(x0s, 1), torch.cat(conds, 1), torch.cat(ids, 0), torch.cat(flags))
    raise ValueError(f"unknown LCU++ form {form!r}; use one of {FORMS}")


def collate(items: list[LcuInputs]) -> LcuInputs:
    """Stack samples of one bucket: same token count and the same position ids."""
    first = items[0]
    for it in items[1:]:
        if it.tokens != first.tokens or not torch.equal(it.img_ids, first.img_ids):
            raise ValueError("samples in one batch must share their layout (bucket them first)")
    return LcuInputs(torch.cat([i.x0 for i in items]), torch.cat([i.cond for i in items]), first.img_ids,
                     first.is_target)
