"""Instructions for mined pairs: a caption of the target and an instruction from source to target.

ACE has an MLLM write them. `ChatInstructionWriter` calls an OpenAI-compatible chat endpoint (a served
vision-language model) with both images, with a deadline per call (retries included), retries with backoff,
a circuit breaker, replies validated and capped in length, and a cache (any fsspec URI) of valid replies keyed
by the pair, the endpoint, the model, the prompt and the bytes of both images.
`KnownTransformWriter` gives demo-corpus pairs the instruction of the transformation that made them.
`TemplateInstructionWriter` is the default where no endpoint is configured: a fixed, generic phrasing
per task that names no content it cannot know (recorded as `template:1` in each sample's lineage). A writer
returns None when it has no instruction; such pairs are counted and never packed.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import fsspec

from mining.instructions import chat_http
from schemas.layout import RunLayout
from schemas.records import PairRecord

USER_TEXT = "Source, then target."
SYSTEM_PROMPT = (
    "You write training data for an instruction-based image editor. The first image is the source, the "
    "second the target. Reply with JSON only: {\"caption\": <one sentence describing the target>, "
    "\"instruction\": <an imperative instruction that turns the source into the target, referring to the "
    "source as {image}>}. If the two images are unrelated, reply {\"caption\": null, \"instruction\": null}."
)


@dataclass(frozen=True)
class Instruction:
    instruction: str
    caption: str | None
    writer: str  # name:version of what wrote it, for the sample's lineage
    swapped: bool = False  # the instruction runs from the pair's target to its source


class InstructionWriter(Protocol):
    name: str
    needs_images: bool  # False: write() ignores the image bytes, so callers need not read them

    def write(self, pair: PairRecord, source: bytes, target: bytes, source_ext: str = "png",
              target_ext: str = "png") -> Instruction | None: ...


class InstructionError(RuntimeError):
    pass


class BadReply(ValueError):
    pass


class TooLong(BadReply):
    pass


class _Failed(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# A reply to max_tokens=200 is a few KiB: a body past this is not read on (nor parsed, nor cached).
MAX_REPLY_BYTES = 1 << 20


def _data_url(data: bytes, ext: str) -> str:
    mime = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(ext, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class ChatInstructionWriter:
    """Instructions from an OpenAI-compatible chat endpoint, per pair, cached.

    A call (its retries included) ends by `deadline_s`; a failed call raises InstructionError and counts
    toward the breaker: after `breaker_failures` failed calls in a row the writer stops calling the endpoint
    and every later call raises at once (the caller falls back to templates). A reply is validated before it
    is cached and again when read from the cache: a bad one is a failure, never cached, never trusted.
    `counts` holds chat_requests, chat_cached, chat_ok, chat_failed (with its reasons chat_deadline,
    chat_http_<code>, chat_bad_reply, chat_too_long, chat_transport), chat_circuit_open, chat_cache_invalid."""

    def __init__(self, base_url: str, model: str, cache_dir: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, max_tokens: int = 200,
                 deadline_s: float = 90.0, breaker_failures: int = 5, max_chars: int = 500):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.cache = str(cache_dir).rstrip("/")  # any fsspec URI (the run's root may be s3://)
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout_s, self.retries, self.backoff_s, self.max_tokens = timeout_s, retries, backoff_s, max_tokens
        self.deadline_s, self.breaker_failures, self.max_chars = deadline_s, breaker_failures, max_chars
        self.name = f"chat:{model}"
        self.needs_images = True
        self.calls = 0
        self.counts: Counter[str] = Counter()
        self.failures_in_a_row = 0
        self._aborter = chat_http.Aborter()

    @classmethod
    def from_config(cls, ic, cache_dir: str) -> "ChatInstructionWriter":
        """The writer of a schemas.config.InstructionConfig."""
        return cls(ic.base_url, ic.model, cache_dir, api_key_env=ic.api_key_env, timeout_s=ic.timeout_s,
                   retries=ic.retries, deadline_s=ic.deadline_s, breaker_failures=ic.breaker_failures,
                   max_chars=ic.max_instruction_chars)

    @property
    def circuit_open(self) -> bool:
        return self.failures_in_a_row >= self.breaker_failures

    def close(self) -> None:
        """Abandons the calls in flight (their sockets are shut down at once) and refuses new ones."""
        self._aborter.abort()

    def _cache_key(self, pair_id: str, source: bytes, target: bytes, source_ext: str, target_ext: str) -> str:
        """A reply depends on the pair, the model, the prompt and the two images: all of them are the key
        (another model or prompt, or images that changed, never reuse an old reply)."""
        h = hashlib.sha256()
        for part in (pair_id, self.url, self.model, str(self.max_tokens), SYSTEM_PROMPT, USER_TEXT,
                     source_ext, target_ext):
            h.update(part.encode() + b"\0")
        h.update(hashlib.sha256(source).digest() + hashlib.sha256(target).digest())
        return h.hexdigest()

    def _cached(self, key: str) -> dict | None:
        """The cached reply, re-validated (an older version cached replies unchecked): a bad one is a miss."""
        fs, path = fsspec.core.url_to_fs(RunLayout.cached_reply(self.cache, key))
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            raw = f.read(MAX_REPLY_BYTES + 1)
        try:
            return self._valid(json.loads(raw.decode("utf-8")))
        except (BadReply, ValueError):
            self.counts["chat_cache_invalid"] += 1
            return None

    def _store(self, key: str, reply: dict) -> None:
        fs, path = fsspec.core.url_to_fs(RunLayout.cached_reply(self.cache, key))
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open(tmp, "wb") as f:
            f.write(json.dumps(reply).encode())
        fs.mv(tmp, path)

    def _valid(self, reply) -> dict:
        """`reply` when it is {"instruction": str | None, "caption": str | None, ...} within the length cap."""
        if not isinstance(reply, dict):
            raise BadReply(f"bad reply: a JSON {type(reply).__name__}, not an object")
        for field in ("instruction", "caption"):
            v = reply.get(field)
            if v is not None and not isinstance(v, str):
                raise BadReply(f"bad reply: {field} is a {type(v).__name__}, not a string")
            if v is not None and len(v) > self.max_chars:
                raise TooLong(f"{field} too long: {len(v)} characters, over {self.max_chars}")
        return reply

    def _parse(self, body: bytes) -> dict:
        try:
            resp = json.loads(body.decode("utf-8"))
            text = resp["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as e:
            raise BadReply(f"bad reply: {type(e).__name__}: {body[:120]!r}") from None
        if not isinstance(text, str):
            raise BadReply(f"bad reply: message content is a {type(text).__name__}, not a string")
        if len(text) > MAX_REPLY_BYTES:
            raise TooLong(f"reply too long: {len(text)} characters")
        try:
            reply = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
        except ValueError as e:
            raise BadReply(f"bad reply: content is not JSON ({e}): {text[:120]!r}") from None
        return self._valid(reply)

    def _request(self, body: bytes) -> dict:
        """The validated reply; a bad reply or a client error is not retried, a deadline ends the retries."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        deadline = time.monotonic() + self.deadline_s
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff_s * 2 ** (attempt - 1)
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
            self.calls += 1
            self.counts["chat_requests"] += 1
            try:
                data = chat_http.post(self.url, body, headers, deadline=deadline, timeout_s=self.timeout_s,
                                      max_bytes=MAX_REPLY_BYTES, aborter=self._aborter)
            except chat_http.HTTPStatusError as e:
                last = e
                if e.status < 500 and e.status != 429:  # a client error will not fix itself
                    raise _Failed(f"http_{e.status}", f"{self.url} answered {e.status}: {e.body!r}") from None
                continue
            except chat_http.BodyTooLarge as e:
                raise _Failed("too_long", str(e)) from None
            except chat_http.DeadlineExceeded:
                raise _Failed("deadline", f"{self.url}: no reply within the deadline of {self.deadline_s} s "
                                          f"({attempt + 1} attempts)") from None
            except chat_http.Aborted:
                raise _Failed("closed", f"{self.url}: the writer was closed") from None
            except (OSError, http.client.HTTPException, ValueError) as e:
                last = e
                continue
            try:
                return self._parse(data)
            except TooLong as e:
                raise _Failed("too_long", str(e)) from None
            except BadReply as e:
                raise _Failed("bad_reply", str(e)) from None
        if isinstance(last, chat_http.HTTPStatusError):
            raise _Failed(f"http_{last.status}", f"{self.url} answered {last.status} "
                                                 f"({self.calls} requests so far)")
        if last is None:
            raise _Failed("deadline", f"{self.url}: no reply within the deadline of {self.deadline_s} s")
        raise _Failed("transport", f"{self.url} failed after {self.retries + 1} attempts: {last}")

    def write(self, pair: PairRecord, source: bytes, target: bytes, source_ext: str = "png",
              target_ext: str = "png") -> Instruction | None:
        pair_id = pair.pair_id
        key = self._cache_key(pair_id, source, target, source_ext, target_ext)
        reply = self._cached(key)
        if reply is not None:
            self.counts["chat_cached"] += 1
        else:
            if self._aborter.aborted:
                raise InstructionError(f"{self.url}: the writer was closed")
            if self.circuit_open:
                self.counts["chat_circuit_open"] += 1
                raise InstructionError(f"{self.url}: circuit open after {self.failures_in_a_row} failed calls")
            body = json.dumps({
                "model": self.model, "max_tokens": self.max_tokens, "temperature": 0,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": [
                        {"type": "text", "text": USER_TEXT},
                        {"type": "image_url", "image_url": {"url": _data_url(source, source_ext)}},
                        {"type": "image_url", "image_url": {"url": _data_url(target, target_ext)}},
                    ]},
                ],
            }).encode()
            try:
                reply = self._request(body)
            except _Failed as e:
                self.failures_in_a_row += 1
                self.counts["chat_failed"] += 1
                self.counts[f"chat_{e.reason}"] += 1
                raise InstructionError(f"pair {pair_id}: {e}") from None
            self.failures_in_a_row = 0
            self.counts["chat_ok"] += 1
            self._store(key, reply)
        if not reply.get("instruction"):
            return None
        instruction = reply["instruction"]
        if "{image}" not in instruction:
            instruction = f"{instruction.rstrip('.')} in {{image}}."
        return Instruction(instruction, reply.get("caption"), self.name)


class KnownTransformWriter:
    """Instructions known from how the demo corpus was made: (source id, target id) -> instruction.
    A pair mined in the other order gets the instruction with swapped=True."""

    name = "known-transform:1"
    needs_images = False

    def __init__(self, known: dict[tuple[str, str], str]):
        self.known = known

    def write(self, pair: PairRecord, source: bytes = b"", target: bytes = b"", source_ext: str = "png",
              target_ext: str = "png") -> Instruction | None:
        if (pair.source_id, pair.target_id) in self.known:
            return Instruction(self.known[(pair.source_id, pair.target_id)], None, self.name)
        if (pair.target_id, pair.source_id) in self.known:
            return Instruction(self.known[(pair.target_id, pair.source_id)], None, self.name, swapped=True)
        return None


# Generic phrasings per task: the pair's change is unknown without a vision-language model, so none of
# them names an object, a colour or a style it has not seen.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "general_editing": ("Edit {image} into a closely related version of the same scene.",
                        "Change {image} into another shot of the same subject.",
                        "Turn {image} into a variation of the same scene."),
    "facial_editing": ("Edit the face in {image} to match another photo of the same person.",
                       "Change the expression or pose of the person in {image}."),
    "reference_generation": ("Generate another image of the subject of {image}.",  # no claim of a new scene
                             "Show the subject of {image} again, in another image of it."),
}
FALLBACK_TEMPLATES = ("Edit {image} into a related image.",)

# groups of one union-find set: {refs} lists the inputs' indicators ("{image1}, {image2} and {image3}")
GROUP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "series_generation": ("Generate one more image of the series {refs}.",
                          "Continue the series shown in {refs} with a new image of the same subject.",
                          "Given {refs}, create another picture that belongs to the same set.",
                          "Make a new image consistent with {refs}: same subject, a new view."),
}
GROUP_TEMPLATER = ("group-templates", "1")


def group_instruction(task: str, key: str, n_inputs: int) -> str:
    """The instruction of a group sample with `n_inputs` references, chosen by a hash of its key."""
    options = GROUP_TEMPLATES[task]
    refs = [f"{{image{i}}}" for i in range(1, n_inputs + 1)]
    listed = refs[0] if n_inputs == 1 else ", ".join(refs[:-1]) + " and " + refs[-1]
    k = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % len(options)
    return options[k].format(refs=listed)


class TemplateInstructionWriter:
    """A fixed generic instruction per task, chosen by a hash of the pair id (deterministic)."""

    name = "template:1"
    needs_images = False

    def write(self, pair: PairRecord, source: bytes = b"", target: bytes = b"", source_ext: str = "png",
              target_ext: str = "png") -> Instruction:
        options = TEMPLATES.get(pair.task, FALLBACK_TEMPLATES)
        k = int.from_bytes(hashlib.sha256(pair.pair_id.encode()).digest()[:4], "big") % len(options)
        return Instruction(options[k], None, self.name)
