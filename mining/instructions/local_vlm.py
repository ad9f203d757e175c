"""Instructions from a local vision-language model (`mining.models.vlm.LocalVLM`), for runs without a
server: the chat writer's prompt, both images, and the same parsing, validation and length cap on what the
model generates. A pair whose text fails them is a counted failure (the caller falls back to the
template), never a made-up instruction. Pairs are generated `batch_size` at a time.

`counts`: local_pairs (prompts generated), local_ok, local_failed with its reasons local_bad_reply and
local_too_long.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Callable, Iterable, Iterator

from mining.instructions.writers import (SYSTEM_PROMPT, USER_TEXT, BadReply, Instruction, InstructionError, Item,
                                         TooLong, Written, parse_content, reply_instruction)
from mining.models.vlm import LocalVLM
from schemas.records import PairRecord


class LocalVLMWriter:
    needs_images = True

    def __init__(self, model: LocalVLM, *, batch_size: int = 4, max_chars: int = 500):
        self.model, self.batch_size, self.max_chars = model, max(1, batch_size), max_chars
        self.name = f"local-vlm:{model.folder.name}"
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_config(cls, ic, models_dir: str, model: LocalVLM | None = None) -> "LocalVLMWriter":
        """The writer of a schemas.config.InstructionConfig (backend local_vlm); `model`: one already loaded."""
        if not ic.local_model:
            raise ValueError("mining.instructions.backend local_vlm needs mining.instructions.local_model")
        model = model or local_model(ic, models_dir)
        return cls(model, batch_size=ic.local_batch_size, max_chars=ic.max_instruction_chars)

    def write(self, pair: PairRecord, source: bytes, target: bytes, source_ext: str = "png",
              target_ext: str = "png") -> Instruction | None:
        (out,) = self.write_many([(pair, source, target, source_ext, target_ext)])
        if isinstance(out, InstructionError):
            raise out
        return out

    def write_many(self, items: Iterable, load: Callable[[object], Item] | None = None) -> Iterator[Written]:
        """What the model makes of each item, in input order, `batch_size` items per generate() call."""
        batch: list[Item] = []
        for it in items:
            batch.append(load(it) if load else it)
            if len(batch) == self.batch_size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, batch: list[Item]) -> list[Written]:
        from PIL import Image

        prompts = [(f"{SYSTEM_PROMPT}\n\n{USER_TEXT}",
                    [Image.open(io.BytesIO(src)).convert("RGB"), Image.open(io.BytesIO(tgt)).convert("RGB")])
                   for _, src, tgt, _, _ in batch]
        texts = self.model(prompts)
        self.counts["local_pairs"] += len(batch)
        out: list[Written] = []
        for (pair, *_), text in zip(batch, texts, strict=True):
            try:
                reply = parse_content(text, self.max_chars)
            except BadReply as e:
                reason = "too_long" if isinstance(e, TooLong) else "bad_reply"
                self.counts["local_failed"] += 1
                self.counts[f"local_{reason}"] += 1
                out.append(InstructionError(f"pair {pair.pair_id}: {e}"))
                continue
            self.counts["local_ok"] += 1
            out.append(reply_instruction(reply, self.name))
        return out


def local_model(ic, models_dir: str) -> LocalVLM:
    """The model a local_vlm InstructionConfig names (not loaded)."""
    from pathlib import Path

    return LocalVLM(Path(models_dir) / ic.local_model, device=ic.local_device, max_new_tokens=ic.max_tokens)
