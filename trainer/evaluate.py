"""Checkpoint evaluation on the held-out split: loss per task and an image grid, on rank 0.

The held-out samples (trainer/data.py `held_out`, at most `eval_samples` per task) are read in one pass over
the shards at the first checkpoint of a run attempt and kept as raw shard members (compressed bytes, not
decoded panels). At each checkpoint: the mean loss per task over fixed noise draws (`AceTrainer.eval_loss`),
and for `eval_images` of them (tasks taken in turn) an inference with the in-training transformer through
the ACE++ FluxFillPipeline path of trainer/infer.py; the grid has one row per sample and the columns input,
mask, output, target, each cell the size of the sample's target panel. Written as eval/step-NNNNNNN.json and
eval/step-NNNNNNN.png in the run folder.

Only the unwrapped transformer runs (never the DDP wrapper): no collective, so the other ranks simply wait at
the checkpoint's report. Under FSDP with several workers the unwrapped module holds shards only: no eval.
"""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict

import numpy as np
import torch
from PIL import Image

from schemas import io as storage
from schemas.config import TrainConfig
from schemas.records import Role
from schemas.shard_layout import decode_sample
from trainer.data import _example, iter_held_out
from trainer.encode import ENCODED_EXT
from trainer.infer import run_infer
from trainer.live import EVAL_DIR, eval_name
from trainer.panels import _fit, _open

COLUMNS = ("input", "mask", "output", "target")
GREY = (128, 128, 128)


def _to_image(t: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] or (1, H, W) in {0, 1} -> RGB."""
    if t.shape[0] == 1:
        return Image.fromarray((t[0].numpy() > 0.5).astype(np.uint8) * 255).convert("RGB")
    return Image.fromarray(((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Rows of equal-height cells side by side, rows stacked; narrower rows padded with grey on the right."""
    width = max(sum(c.width for c in r) for r in rows)
    out = Image.new("RGB", (width, sum(r[0].height for r in rows)), GREY)
    y = 0
    for r in rows:
        x = 0
        for c in r:
            out.paste(c, (x, y))
            x += c.width
        y += r[0].height
    return out


class CheckpointEval:
    def __init__(self, cfg: TrainConfig, urls: list, run_dir: str):  # shard URLs or shard sets (trainer.data.as_sets)
        self.cfg, self.urls, self.run_dir = cfg, urls, run_dir
        self.pool: list[dict] | None = None

    def _load(self) -> list[dict]:
        if self.pool is None:
            self.pool = list(iter_held_out(self.urls, self.cfg))
            if not self.pool:
                print(f"eval: no held-out sample in these shards at eval_fraction {self.cfg.eval_fraction}: "
                      f"checkpoints are not evaluated")
            elif any(ENCODED_EXT in raw for raw in self.pool) and self.cfg.eval_images:
                print("eval: precomputed shards carry no images: checkpoints get eval losses, no grid")
        return self.pool

    def for_grid(self) -> list[dict]:
        """`eval_images` held-out samples with images, one task after another."""
        by_task: dict[str, list[dict]] = defaultdict(list)
        for raw in self._load():
            if ENCODED_EXT not in raw:
                by_task[json.loads(raw["json"])["task"]].append(raw)
        order = [by_task[t][i] for i in range(self.cfg.eval_samples) for t in sorted(by_task) if i < len(by_task[t])]
        return order[:self.cfg.eval_images]

    def __call__(self, trainer, step: int) -> dict | None:
        """Evaluate the trainer's model now; the record written to eval/step-NNNNNNN.json, or None."""
        pool = self._load()
        if not pool:
            return None
        t0 = time.perf_counter()
        tr = trainer.transformer
        tr.eval()
        try:
            by_task: dict[str, list] = defaultdict(list)
            for raw in pool:
                ex = _example(raw, self.cfg)
                by_task[ex.task].append(ex)
            draws = range(self.cfg.eval_draws)
            losses = {task: trainer.eval_loss(exs, draws) for task, exs in sorted(by_task.items())}
            shown = self.for_grid()
            png = self.grid_png(trainer, shown) if shown else None
        finally:
            tr.train()
        folder = storage.join(self.run_dir, EVAL_DIR)
        if png is not None:
            storage.atomic_write_bytes(storage.join(folder, eval_name(step, "png")), png)
        record = {"step": step, "loss": losses, "samples": {t: len(v) for t, v in sorted(by_task.items())},
                  "grid": eval_name(step, "png") if png is not None else None,
                  "grid_keys": [json.loads(raw["json"])["key"] for raw in shown], "columns": list(COLUMNS),
                  "seconds": round(time.perf_counter() - t0, 3)}
        storage.atomic_write_bytes(storage.join(folder, eval_name(step, "json")), json.dumps(record).encode())
        return record

    @torch.no_grad()
    def grid_png(self, trainer, raws: list[dict]) -> bytes:
        rows = []
        for raw in raws:
            rows.append(self.row(trainer, raw))
        buf = io.BytesIO()
        grid(rows).save(buf, format="PNG")
        return buf.getvalue()

    def row(self, trainer, raw: dict) -> list[Image.Image]:
        """input, mask, output, target at the size of the sample's target panel. Input: the edit image, else
        the first reference, else grey (text-to-image); mask: the target panel's (white = generate)."""
        cfg = self.cfg
        sample = decode_sample(raw)
        target_panel = _example(raw, cfg).panels[-1]
        h, w = target_panel.image.shape[-2:]
        edit = next((u for u in sample.units if u.role is Role.EDIT), None)
        ref = next((u for u in sample.units if u.role is Role.REFERENCE), None)
        edit_im = _open(edit.image) if edit is not None else None
        ref_im = _open(ref.image) if ref is not None else None
        shown = edit_im or ref_im
        target_im = _open(sample.target.image)
        with trainer.autocast:
            out = run_infer(trainer.pipe, sample.instruction, edit_im,
                            _open(edit.mask, "L") if edit is not None and edit.mask is not None else None,
                            ref_im, steps=cfg.eval_infer_steps, seed=cfg.seed,
                            repainting_scale=cfg.repainting_scale(sample.task), task=sample.task,
                            layout=cfg.maskless_layout, max_tokens=cfg.max_tokens, size=target_im.size,
                            max_sequence_length=min(cfg.max_sequence_length,
                                                    trainer.pipe.tokenizer_2.model_max_length))
        fit = lambda im: _fit(im, h, w, Image.Resampling.BICUBIC)  # noqa: E731
        return [fit(shown) if shown is not None else Image.new("RGB", (w, h), GREY), _to_image(target_panel.mask),
                fit(out.convert("RGB")), fit(target_im)]
