"""Instructions for mined pairs: a caption of the target and an instruction from source to target.

ACE has an MLLM write them. `ChatInstructionWriter` calls an OpenAI-compatible chat endpoint (a served
vision-language model) with both images, `in_flight` calls at a time (`write_many`) under an optional rate
limit, with a deadline per call (retries included), retries with backoff, a circuit breaker, replies
validated and capped in length, and a cache (any fsspec URI) of valid replies keyed by the pair, the
endpoint, the model, the prompt and the bytes of both images. `mining.instructions.local_vlm` writes them
with a local transformers model instead, validated the same way.
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
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, Union

import fsspec

from mining.instructions import chat_http
from mining.instructions.pool import RateLimiter, ordered_map
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


# one pair to instruct: (pair, source bytes, target bytes, source ext, target ext)
Item = tuple[PairRecord, bytes, bytes, str, str]
# what a writer made of an item: an instruction, none (the pair is not instructed), or a counted failure
Written = Union[Instruction, None, InstructionError]


def write_all(writer: InstructionWriter, items: Iterable, load: Callable[[object], Item] | None = None) \
        -> Iterator[Written]:
    """What `writer` makes of each item, in input order: its own `write_many` where it has one (a chat
    writer keeps its requests in flight, a local model batches), else one `write` at a time. `load` turns
    an item into an Item (reading its images) where the writer does its work, a window ahead."""
    many = getattr(writer, "write_many", None)
    if many is not None:
        yield from many(items, load=load)
        return
    for it in items:
        p, src, tgt, sext, text = load(it) if load else it
        try:
            yield writer.write(p, src, tgt, sext, text)
        except InstructionError as e:
            yield e


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


def validate_reply(reply, max_chars: int) -> dict:
    """`reply` when it is {"instruction": str | None, "caption": str | None, ...} within the length cap."""
    if not isinstance(reply, dict):
        raise BadReply(f"bad reply: a JSON {type(reply).__name__}, not an object")
    for field in ("instruction", "caption"):
        v = reply.get(field)
        if v is not None and not isinstance(v, str):
            raise BadReply(f"bad reply: {field} is a {type(v).__name__}, not a string")
        if v is not None and len(v) > max_chars:
            raise TooLong(f"{field} too long: {len(v)} characters, over {max_chars}")
    return reply


def parse_content(text, max_chars: int) -> dict:
    """The validated reply a model's message content (JSON, perhaps fenced) holds."""
    if not isinstance(text, str):
        raise BadReply(f"bad reply: message content is a {type(text).__name__}, not a string")
    if len(text) > MAX_REPLY_BYTES:
        raise TooLong(f"reply too long: {len(text)} characters")
    try:
        reply = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
    except ValueError as e:
        raise BadReply(f"bad reply: content is not JSON ({e}): {text[:120]!r}") from None
    return validate_reply(reply, max_chars)


def reply_instruction(reply: dict, writer: str) -> Instruction | None:
    """The Instruction of a validated reply (None when it has none); {image} is added where missing."""
    if not reply.get("instruction"):
        return None
    instruction = reply["instruction"]
    if "{image}" not in instruction:
        instruction = f"{instruction.rstrip('.')} in {{image}}."
    return Instruction(instruction, reply.get("caption"), writer)


def _data_url(data: bytes, ext: str) -> str:
    mime = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(ext, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class ChatInstructionWriter:
    """Instructions from an OpenAI-compatible chat endpoint, per pair, cached.

    `write_many` keeps `in_flight` calls going (threads on the deadline-bound transport of chat_http) and
    starts at most `requests_per_second` requests a second (0: no limit). A call (its retries included) ends
    by `deadline_s`; a failed call raises InstructionError (`write_many` returns it) and counts toward the
    breaker: after `breaker_failures` failed calls in a row (in the order they end) the writer starts no new
    call and every later one fails at once (the caller falls back to templates); calls already in flight
    then end by their deadlines. A reply is validated before it is cached and again when read from the
    cache: a bad one is a failure, never cached, never trusted. `counts` holds chat_requests, chat_cached,
    chat_ok, chat_failed (with its reasons chat_deadline, chat_http_<code>, chat_bad_reply, chat_too_long,
    chat_transport, chat_closed, chat_abandoned: a retry not made once the breaker opened),
    chat_circuit_open (calls never made), chat_cache_invalid. The constructor's `in_flight` defaults to one
    call at a time; the configuration's to many."""

    def __init__(self, base_url: str, model: str, cache_dir: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, max_tokens: int = 200,
                 deadline_s: float = 90.0, breaker_failures: int = 5, max_chars: int = 500, in_flight: int = 1,
                 requests_per_second: float = 0.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.cache = str(cache_dir).rstrip("/")  # any fsspec URI (the run's root may be s3://)
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout_s, self.retries, self.backoff_s, self.max_tokens = timeout_s, retries, backoff_s, max_tokens
        self.deadline_s, self.breaker_failures, self.max_chars = deadline_s, breaker_failures, max_chars
        self.in_flight = max(1, in_flight)
        self.name = f"chat:{model}"
        self.needs_images = True
        self.calls = 0
        self.counts: Counter[str] = Counter()
        self.failures_in_a_row = 0
        self._lock = threading.Lock()  # counts, calls and the breaker, shared by the calls in flight
        self._limiter = RateLimiter(requests_per_second)
        self._aborter = chat_http.Aborter()

    @classmethod
    def from_config(cls, ic, cache_dir: str) -> "ChatInstructionWriter":
        """The writer of a schemas.config.InstructionConfig."""
        return cls(ic.base_url, ic.model, cache_dir, api_key_env=ic.api_key_env, timeout_s=ic.timeout_s,
                   retries=ic.retries, backoff_s=ic.backoff_s, max_tokens=ic.max_tokens, deadline_s=ic.deadline_s,
                   breaker_failures=ic.breaker_failures, max_chars=ic.max_instruction_chars,
                   in_flight=ic.in_flight, requests_per_second=ic.requests_per_second)

    @property
    def circuit_open(self) -> bool:
        return self.failures_in_a_row >= self.breaker_failures

    def close(self) -> None:
        """Abandons the calls in flight (their sockets are shut down at once) and refuses new ones."""
        self._aborter.abort()

    def _count(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self.counts[k] += 1

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
            self._count("chat_cache_invalid")
            return None

    def _store(self, key: str, reply: dict) -> None:
        fs, path = fsspec.core.url_to_fs(RunLayout.cached_reply(self.cache, key))
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"  # the same pair twice at once: two files
        with fs.open(tmp, "wb") as f:
            f.write(json.dumps(reply).encode())
        fs.mv(tmp, path)

    def _valid(self, reply) -> dict:
        return validate_reply(reply, self.max_chars)

    def _parse(self, body: bytes) -> dict:
        try:
            resp = json.loads(body.decode("utf-8"))
            text = resp["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as e:
            raise BadReply(f"bad reply: {type(e).__name__}: {body[:120]!r}") from None
        return parse_content(text, self.max_chars)

    def _request(self, body: bytes) -> dict:
        """The validated reply; a bad reply or a client error is not retried, a deadline ends the retries
        (and the wait for a rate-limited start)."""
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
                if self.circuit_open:  # other calls failed meanwhile: no more attempts at this endpoint
                    raise _Failed("abandoned", f"{self.url}: circuit opened while this call was retrying")
            if not self._limiter.wait(deadline):
                break
            with self._lock:
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
        key = self._cache_key(pair.pair_id, source, target, source_ext, target_ext)
        content = [{"type": "text", "text": USER_TEXT},
                   {"type": "image_url", "image_url": {"url": _data_url(source, source_ext)}},
                   {"type": "image_url", "image_url": {"url": _data_url(target, target_ext)}}]
        return reply_instruction(self._reply(key, SYSTEM_PROMPT, content, f"pair {pair.pair_id}"), self.name)

    def _reply(self, key: str, system: str, content: list[dict], what: str) -> dict:
        """The validated reply to one chat call (from the cache when there), counted; InstructionError on a
        failure (the breaker counts it)."""
        reply = self._cached(key)
        if reply is not None:
            self._count("chat_cached")
            return reply
        if self._aborter.aborted:
            raise InstructionError(f"{self.url}: the writer was closed")
        with self._lock:
            if self.circuit_open:
                self.counts["chat_circuit_open"] += 1
                raise InstructionError(f"{self.url}: circuit open after {self.failures_in_a_row} failed calls")
        body = json.dumps({"model": self.model, "max_tokens": self.max_tokens, "temperature": 0,
                           "messages": [{"role": "system", "content": system},
                                        {"role": "user", "content": content}]}).encode()
        try:
            reply = self._request(body)
        except _Failed as e:
            with self._lock:
                self.failures_in_a_row += 1
                self.counts["chat_failed"] += 1
                self.counts[f"chat_{e.reason}"] += 1
            raise InstructionError(f"{what}: {e}") from None
        with self._lock:
            self.failures_in_a_row = 0
            self.counts["chat_ok"] += 1
        self._store(key, reply)
        return reply

    def write_many(self, items: Iterable, load: Callable[[object], Item] | None = None) -> Iterator[Written]:
        """What `write` makes of each item (an Item, or what `load` turns into one in the thread making its
        call), `in_flight` at a time, in input order; a failure is returned as its InstructionError."""
        def one(it) -> Written:
            try:
                return self.write(*(load(it) if load else it))
            except InstructionError as e:
                return e

        return ordered_map(one, items, self.in_flight)


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
    # pairs the task's trained classifier passed: they name the kind of change, never the object or the words
    "object_editing": ("Change one object in {image}.", "Edit an object in {image} and keep the rest of the scene."),
    "text_editing": ("Change the text in {image}.", "Edit the written text in {image} and keep the rest."),
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
