"""Captions of single images for `text_to_image` (ACE B.1: an MLLM captions the images; the caption is the
prompt that generates them), written by the chat endpoint or a local vision-language model.

A caption is what the model replied, validated (a JSON object whose `caption` is a string within the length
cap) or nothing: an image without a valid caption makes no text-to-image sample. No template ever stands
in for a caption. Both captioners return, per image in input order, the caption, None (the model declined)
or an InstructionError (a counted failure).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from typing import Iterable, Iterator, Union

from mining.instructions.pool import ordered_map
from mining.instructions.writers import (BadReply, ChatInstructionWriter, InstructionError, TooLong, _data_url,
                                         parse_content)

CAPTION_PROMPT = (
    "You write captions that a text-to-image model is trained on. Describe the image in one or two "
    "sentences: the subject, the setting, colours, lighting and style, as a prompt that would generate it. "
    "Reply with JSON only: {\"caption\": <the caption>}. If the image shows nothing describable, reply "
    "{\"caption\": null}."
)
CAPTION_USER_TEXT = "Caption this image."
# one image to caption: (image id, bytes, ext)
CaptionItem = tuple[str, bytes, str]
Captioned = Union[str, None, InstructionError]


def _caption(reply: dict) -> str | None:
    c = reply.get("caption")
    return c.strip() if isinstance(c, str) and c.strip() else None


class ChatCaptioner(ChatInstructionWriter):
    """Captions from the chat endpoint, with the instruction writer's transport, deadline, retries, breaker,
    validation and cache (keyed by the image id, the endpoint, the model, the prompt and the image bytes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = f"chat-caption:{self.model}"

    def _caption_key(self, image_id: str, data: bytes, ext: str) -> str:
        h = hashlib.sha256()
        for part in ("caption", image_id, self.url, self.model, str(self.max_tokens), CAPTION_PROMPT,
                     CAPTION_USER_TEXT, ext):
            h.update(part.encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
        return h.hexdigest()

    def caption(self, image_id: str, data: bytes, ext: str = "png") -> str | None:
        content = [{"type": "text", "text": CAPTION_USER_TEXT},
                   {"type": "image_url", "image_url": {"url": _data_url(data, ext)}}]
        return _caption(self._reply(self._caption_key(image_id, data, ext), CAPTION_PROMPT, content,
                                    f"image {image_id}"))

    def caption_many(self, items: Iterable[CaptionItem]) -> Iterator[Captioned]:
        def one(it: CaptionItem) -> Captioned:
            try:
                return self.caption(*it)
            except InstructionError as e:
                return e

        return ordered_map(one, items, self.in_flight)


class LocalCaptioner:
    """Captions from a local vision-language model (`mining.models.vlm.LocalVLM`: prompts of text and
    images -> generated texts), `batch_size` images per generate() call, parsed and validated like a chat
    reply. counts: local_images, local_ok, local_failed (local_bad_reply, local_too_long)."""

    def __init__(self, model, *, batch_size: int = 4, max_chars: int = 500, name: str | None = None):
        self.model, self.batch_size, self.max_chars = model, max(1, batch_size), max_chars
        self.name = name or f"local-vlm-caption:{model.folder.name}"
        self.counts: Counter[str] = Counter()

    def caption_many(self, items: Iterable[CaptionItem]) -> Iterator[Captioned]:
        batch: list[CaptionItem] = []
        for it in items:
            batch.append(it)
            if len(batch) == self.batch_size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, batch: list[CaptionItem]) -> list[Captioned]:
        from PIL import Image

        texts = self.model([(f"{CAPTION_PROMPT}\n\n{CAPTION_USER_TEXT}",
                             [Image.open(io.BytesIO(data)).convert("RGB")]) for _, data, _ in batch])
        self.counts["local_images"] += len(batch)
        out: list[Captioned] = []
        for (image_id, _, _), text in zip(batch, texts, strict=True):
            try:
                reply = parse_content(text, self.max_chars)
            except BadReply as e:
                self.counts["local_failed"] += 1
                self.counts["local_too_long" if isinstance(e, TooLong) else "local_bad_reply"] += 1
                out.append(InstructionError(f"image {image_id}: {e}"))
                continue
            self.counts["local_ok"] += 1
            out.append(_caption(reply))
        return out

    def close(self) -> None:
        return None


def make_captioner(ic, cache_dir: str, models_dir: str):
    """The captioner an InstructionConfig's backend names (chat or local_vlm); ValueError for any other:
    templates never stand in for captions."""
    if ic.backend == "chat":
        if not ic.model:
            raise ValueError("text_to_image captions need mining.instructions.model (and base_url) for the chat "
                             "endpoint")
        return ChatCaptioner.from_config(ic, cache_dir)
    if ic.backend == "local_vlm":
        from mining.instructions.local_vlm import local_model

        if not ic.local_model:
            raise ValueError("text_to_image captions with backend local_vlm need mining.instructions.local_model")
        return LocalCaptioner(local_model(ic, models_dir), batch_size=ic.local_batch_size,
                              max_chars=ic.max_instruction_chars, name=f"local-vlm-caption:{ic.local_model}")
    raise ValueError(f"text_to_image needs a captioning model: mining.instructions.backend is {ic.backend!r}, "
                     f"set it to chat (an endpoint) or local_vlm (templates never stand in for captions)")
