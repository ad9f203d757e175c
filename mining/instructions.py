"""Instructions for mined pairs: a caption of the target and an instruction from source to target.

ACE has an MLLM write them. `ChatInstructionWriter` calls an OpenAI-compatible chat endpoint (a served
vision-language model) with both images, with a timeout, retries with backoff, and a cache (any fsspec
URI) keyed by the pair, the endpoint, the model, the prompt and the bytes of both images.
`KnownTransformWriter` gives demo-corpus pairs the instruction of the transformation that made them.
`TemplateInstructionWriter` is the default where no endpoint is configured: a fixed, generic phrasing
per task that names no content it cannot know (recorded as `template:1` in each sample's lineage). A writer
returns None when it has no instruction; such pairs are counted and never packed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

import fsspec

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


def _data_url(data: bytes, ext: str) -> str:
    mime = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(ext, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class ChatInstructionWriter:
    def __init__(self, base_url: str, model: str, cache_dir: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, max_tokens: int = 200):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.cache = str(cache_dir).rstrip("/")  # any fsspec URI (the run's root may be s3://)
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout_s, self.retries, self.backoff_s, self.max_tokens = timeout_s, retries, backoff_s, max_tokens
        self.name = f"chat:{model}"
        self.needs_images = True
        self.calls = 0

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
        fs, path = fsspec.core.url_to_fs(f"{self.cache}/{key[:2]}/{key}.json")
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            return json.loads(f.read())

    def _store(self, key: str, reply: dict) -> None:
        fs, path = fsspec.core.url_to_fs(f"{self.cache}/{key[:2]}/{key}.json")
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open(tmp, "wb") as f:
            f.write(json.dumps(reply).encode())
        fs.mv(tmp, path)

    def _request(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.calls += 1
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as e:
                last = e
                if e.code < 500 and e.code != 429:  # a client error will not fix itself
                    raise InstructionError(f"{self.url} answered {e.code}: {e.read()[:200]!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = e
        raise InstructionError(f"{self.url} failed after {self.retries + 1} attempts: {last}")

    def write(self, pair: PairRecord, source: bytes, target: bytes, source_ext: str = "png",
              target_ext: str = "png") -> Instruction | None:
        pair_id = pair.pair_id
        key = self._cache_key(pair_id, source, target, source_ext, target_ext)
        reply = self._cached(key)
        if reply is None:
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
            resp = self._request(body)
            try:
                text = resp["choices"][0]["message"]["content"]
                reply = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                raise InstructionError(f"unusable reply for pair {pair_id}: {e}: {str(resp)[:200]}") from None
            self._store(key, reply)
        if not reply.get("instruction"):
            return None
        instruction = str(reply["instruction"])
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
