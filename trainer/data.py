"""Training data: AceSamples from WebDataset shards -> panels, filtered by training phase, weighted by task.

Several shard sets train as one mixture: each worker takes its share of every shard set and interleaves them
sample by sample in proportion to their sizes (from the manifests), so every stretch of the stream holds
each set at its share and every set ends with the epoch; task weights then decide which samples are kept.
Deterministic: the n-th example a worker sees depends only on (seed, epoch, n), so a resumed run can skip
exactly the examples it already trained on. Within each set, workers split shards when there are enough of
them, else samples (every worker reads every shard of that set and keeps its share).

Every sample read is kept or skipped for one reason, counted (DataCounts: held out, not 0-ref in phase 1,
task weight, a task this version does not know, before the resume point); a sample that is there but does not
decode fails the run with its key, tar and member. A set pinned by object versions (flows/snapshot.py) is
checked as each tar is opened: a tar replaced under the run is refused by name, never read.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from schemas.config import TrainConfig
from schemas.shard_layout import decode_sample, sample_group
from trainer.counts import DataCounts, merge_counts  # noqa: F401  (the run's data counts)
from schemas import io as storage
from schemas.taxonomy import TASKS, zero_ref_tasks
from schemas.io import iter_tar_samples
from trainer.encode import ENCODED_EXT, Encoded, decode_encoded, encoded_meta
from trainer.lcu import Panel
from trainer.panels import panel_options, sample_panels


@dataclass
class Example:
    key: str
    task: str
    instruction: str
    panels: list[Panel]
    encoded: Encoded | None = None  # from side shards: model inputs and text embeddings, precomputed


def _unit_interval(seed: int, epoch: int, key: str) -> float:
    h = hashlib.sha256(f"{seed}|{epoch}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def held_out(key: str, cfg: TrainConfig) -> bool:
    """The held-out split: a sample is evaluated, never trained on, when a hash of (seed, group) falls under
    `eval_fraction` (the same in every epoch, on every worker and after a resume); `key` is the sample's
    group (sample_group)."""
    if cfg.eval_fraction <= 0:
        return False
    h = hashlib.sha256(f"held-out|{cfg.seed}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < cfg.eval_fraction


HELD_OUT, NOT_ZERO_REF, WEIGHTED_OUT, RESUMED = ("held out", "not 0-ref (phase 1)", "task weight",
                                                 "before the resume point")


def skip_reason(task: str, key: str, cfg: TrainConfig, epoch: int, group: str | None = None) -> str | None:
    """Why a sample is not trained on in this epoch (None: it is). A task this version does not know: never.
    Held-out samples never. Phase 1: 0-ref tasks only. Phase 2: every task, kept with probability
    weight / max weight."""
    if task not in TASKS:
        return f"unknown task {task!r}"
    if held_out(group or key, cfg):
        return HELD_OUT
    if cfg.phase == 1:
        return None if task in _ZERO_REF else NOT_ZERO_REF
    weights = cfg.task_weights
    w = weights.get(task, 1.0)
    top = max([1.0, *weights.values()]) if weights else 1.0
    return None if w > 0 and _unit_interval(cfg.seed, epoch, key) < w / top else WEIGHTED_OUT


def keep_sample(task: str, key: str, cfg: TrainConfig, epoch: int, group: str | None = None) -> bool:
    return skip_reason(task, key, cfg, epoch, group) is None


def untrainable(cfg: TrainConfig, counts_by_task: dict[str, int]) -> str | None:
    """Why no sample of shard sets holding `counts_by_task` (their manifests' sums) trains in `cfg.phase`, in words
    that end a sentence; None when some do."""
    held = ", ".join(f"{t} ({n})" for t, n in sorted(counts_by_task.items()) if n) or "no sample"
    if cfg.phase == 1:
        if any(n and t in _ZERO_REF for t, n in counts_by_task.items()):
            return None
        return (f"no sample is trainable in phase 1, which takes 0-ref tasks only; their manifests count {held}: "
                f"train phase 2 (--phase 2, train.phase: 2) or add a shard set with 0-ref tasks")
    if any(n and t in TASKS and cfg.task_weights.get(t, 1.0) > 0 for t, n in counts_by_task.items()):
        return None
    return (f"no sample is trainable in phase 2; their manifests count {held}, each of weight 0 "
            f"(train.task_weights) or a task this version does not know")


def _image_member(raw: dict) -> str | None:
    """The first image member of a raw sample that PIL cannot read, by its member name."""
    from PIL import Image

    for name, data in raw.items():
        if name.startswith("__") or name.rsplit(".", 1)[-1].lower() not in ("png", "jpg", "jpeg", "webp"):
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        except Exception:  # PIL raises many kinds: each one is a member that does not decode
            return f"{raw.get('__key__')}.{name}"
    return None


def _bad_sample(raw: dict, e: BaseException) -> str:
    """One line naming a raw sample that does not decode: its key, its tar, and the member at fault."""
    where = f"sample {raw.get('__key__')!r} of {raw.get('__url__')}"
    member = _image_member(raw)
    if member is not None:
        return f"{where}: member {member} is not a readable image ({type(e).__name__})"
    errors = getattr(e, "errors", None)  # pydantic: the first error's place and message
    if callable(errors) and errors():
        first = errors()[0]
        return f"{where} is malformed: {'.'.join(map(str, first.get('loc', ())))}: {first.get('msg')}"
    return f"{where} does not decode: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _example(raw: dict, cfg: TrainConfig) -> Example:
    if ENCODED_EXT in raw:
        meta, enc = decode_encoded(raw[ENCODED_EXT])
        if meta["form"] != cfg.form or int(meta["max_tokens"]) != cfg.max_tokens:
            raise ValueError(f"{raw.get('__url__')}: encoded for form {meta['form']} / {meta['max_tokens']} tokens, "
                             f"the run asks for {cfg.form} / {cfg.max_tokens}: encode again")
        return Example(meta["key"], meta["task"], meta["instruction"], [], enc)
    try:
        sample = decode_sample(raw)
        panels = sample_panels(sample, cfg.max_tokens, cfg.form, **panel_options(cfg, sample))
    except (OSError, ValueError, KeyError, TypeError, SyntaxError, EOFError) as e:
        raise ValueError(_bad_sample(raw, e)) from None
    return Example(sample.key, sample.task, sample.instruction, panels)


def _task_and_key(raw: dict) -> tuple[str, str, str]:
    """(task, key, held-out group) of a raw sample: the group is sample_group of its key and sources."""
    try:
        if ENCODED_EXT in raw:
            meta = encoded_meta(raw[ENCODED_EXT])
            return meta["task"], meta["key"], meta.get("group") or meta["key"]
        meta = json.loads(raw["json"])
        return meta["task"], meta["key"], sample_group(meta["key"], (meta.get("lineage") or {}).get("source_ids"))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(_bad_sample(raw, e)) from None


_ZERO_REF = frozenset(zero_ref_tasks())


class ShardSetChanged(ValueError):
    """A tar of a pinned shard set is not the version the run pinned: the set was rewritten under the run."""


def object_version(details: dict) -> dict:
    """One version of a stored object: its size and its ETag (or the store's nearest equivalent)."""
    tag = next((details[k] for k in ("ETag", "etag", "generation", "LastModified", "mtime", "created")
                if details.get(k) is not None), None)
    return {"size": int(details["size"]), "etag": None if tag is None else str(tag)}


def _version_check(url: str, pinned: dict) -> Callable[[Any], None]:
    def check(f) -> None:
        details = getattr(f, "details", None)  # what an object store's file opened (s3fs reads with If-Match)
        if not details:
            fs, path = storage.fs_path(url)
            details = fs.info(path)
        now = object_version(details)
        if now != pinned:
            raise ShardSetChanged(f"{url} is not the version this run pinned (size {pinned['size']}, ETag "
                                  f"{pinned['etag']}; now size {now['size']}, ETag {now['etag']}): the shard set was "
                                  f"rewritten under the run; train again to train on its new version")
    return check


@dataclass(frozen=True)
class ShardSet:
    """One shard set to train on: its shards' URLs and, from its manifest, each shard's sample count (None:
    unknown, the shard sets then alternate one for one); `versions`, each tar's pinned object_version (remote ones,
    flows/snapshot.py), checked when the tar is opened."""

    urls: tuple[str, ...]
    samples: tuple[int, ...] | None = None
    versions: tuple[dict, ...] | None = None

    def __post_init__(self):
        if self.samples is not None and len(self.samples) != len(self.urls):
            raise ValueError(f"{len(self.urls)} shards but {len(self.samples)} sample counts")
        if self.versions is not None and len(self.versions) != len(self.urls):
            raise ValueError(f"{len(self.urls)} shards but {len(self.versions)} pinned versions")

    def plain(self) -> dict:
        return {"urls": list(self.urls), "samples": None if self.samples is None else list(self.samples),
                "versions": None if self.versions is None else list(self.versions)}


def as_sets(data: Iterable[Any]) -> list[ShardSet]:
    """A flat URL list (one shard set), or ShardSets, or their plain() dicts (as they cross to Ray workers)."""
    data = list(data)
    if all(isinstance(d, str) for d in data):
        return [ShardSet(tuple(data))] if data else []
    out = []
    for d in data:
        if isinstance(d, ShardSet):
            out.append(d)
        elif isinstance(d, dict):
            out.append(ShardSet(tuple(d["urls"]), None if d.get("samples") is None else tuple(d["samples"]),
                                None if d.get("versions") is None else tuple(d["versions"])))
        elif isinstance(d, (list, tuple)) and all(isinstance(u, str) for u in d):
            out.append(ShardSet(tuple(d)))
        else:
            raise TypeError(f"a shard set is a list of shard URLs, a ShardSet or its plain() dict, not {d!r}")
    return out


def _share(s: ShardSet, rank: int, world: int) -> tuple[list[tuple[str, dict | None]], bool, int | None]:
    """This worker's shards of a shard set (with their pinned versions), whether it owns them whole (else every
    `world`-th sample), and how many samples that is (None when the manifest's counts are unknown)."""
    by_shard = len(s.urls) >= world
    pinned = list(zip(s.urls, s.versions or [None] * len(s.urls)))
    urls = pinned[rank::world] if by_shard else pinned
    if s.samples is None:
        return urls, by_shard, None
    if by_shard:
        return urls, by_shard, sum(s.samples[rank::world])
    total = sum(s.samples)
    return urls, by_shard, max(0, -(-(total - rank) // world))  # i < total with i % world == rank


def _set_samples(urls: list[tuple[str, dict | None]], by_shard: bool, rank: int, world: int) -> Iterator[dict]:
    # any fsspec URI (local, s3://, gs://): the tar is streamed once, members grouped as webdataset does
    i = 0
    for url, version in urls:
        check = None
        if version is not None:
            fs, path = storage.fs_path(url)
            fs.invalidate_cache(path)  # the version the store holds now, not a listing cached before
            check = _version_check(url, version)
        for raw in iter_tar_samples(url, check):
            if by_shard or i % world == rank:
                yield raw
            i += 1


def _raw_samples(sets: list[ShardSet], rank: int, world: int) -> Iterator[dict]:
    """One epoch of this worker's raw samples: the shard sets interleaved in proportion to their sizes (the
    one whose share so far, (taken + 1/2) / size, is smallest goes next; ties to the earlier). A shard set that ends
    early drops out; one that runs long finishes after the others."""
    shares = [_share(s, rank, world) for s in sets]
    streams = [_set_samples(urls, by_shard, rank, world) for urls, by_shard, _ in shares]
    known = all(n is not None for _, _, n in shares)  # any size unknown: every shard set alternates one for one
    sizes = [max(1, n) if known else 1 for _, _, n in shares]
    taken = [0] * len(streams)
    live = list(range(len(streams)))
    while live:
        j = min(live, key=lambda k: ((taken[k] + 0.5) / sizes[k], k))
        try:
            raw = next(streams[j])
        except StopIteration:
            live.remove(j)
            continue
        taken[j] += 1
        yield raw


def iter_examples(urls: Iterable[Any], cfg: TrainConfig, rank: int = 0, world: int = 1,
                  start: int = 0, counts: DataCounts | None = None) -> Iterator[Example]:
    """Examples forever (epoch after epoch), skipping the first `start` (resume). `urls`: one shard set's
    URLs, or several shard sets (ShardSet, or lists of URLs) trained on as one mixture. `counts` follows every
    sample read."""
    sets = [s for s in as_sets(urls) if s.urls]
    if not sets:
        raise ValueError("no shards to train on")
    counts = counts if counts is not None else DataCounts()
    n = 0
    for epoch in range(1_000_000):
        this_epoch = DataCounts()
        for raw in _raw_samples(sets, rank, world):
            task, key, group = _task_and_key(raw)
            reason = skip_reason(task, key, cfg, epoch, group)
            if reason is None and n < start:  # examples before `start` are skipped without decoding their images
                reason = RESUMED
                n += 1
            if reason is not None:
                named = f"sample {key!r} of {raw.get('__url__')}" if task not in TASKS else None
                counts.add(reason, named)
                this_epoch.add(reason)
                continue
            counts.keep()
            this_epoch.keep()
            yield _example(raw, cfg)
            n += 1
        if this_epoch.kept == 0 and this_epoch.skipped[RESUMED] == 0:
            raise ValueError(f"no sample of these shards is trainable in phase {cfg.phase} "
                             f"(phase 1 takes 0-ref tasks only): {this_epoch.summary()}")


def iter_held_out(urls: Iterable[Any], cfg: TrainConfig) -> Iterator[dict]:
    """The held-out samples the run's phase would train on, as raw shard members, at most `eval_samples` per
    task, in shard order; one pass over the shards (shard URLs, or ShardSets: their pinned versions checked),
    holding nothing but what it yields."""
    taken: dict[str, int] = {}
    for s in as_sets(urls):
        for raw in _set_samples(list(zip(s.urls, s.versions or [None] * len(s.urls))), True, 0, 1):
            task, _, group = _task_and_key(raw)
            if task not in TASKS or not held_out(group, cfg) or (cfg.phase == 1 and task not in _ZERO_REF):
                continue
            if cfg.phase == 2 and cfg.task_weights.get(task, 1.0) <= 0:
                continue
            if taken.get(task, 0) < cfg.eval_samples:
                taken[task] = taken.get(task, 0) + 1
                yield raw


def layout_key(example: Example) -> tuple:
    """What must be equal for two examples to share a batch: every panel's size and role, in order (so the
    token count and the position ids are equal); for a precomputed example, its position ids."""
    if example.encoded is not None:
        ids = example.encoded.inputs.img_ids
        return ("encoded", example.encoded.inputs.tokens, tuple(ids.shape),
                hashlib.sha256(ids.contiguous().cpu().numpy().tobytes()).hexdigest())
    return tuple((tuple(p.image.shape), bool(p.is_target)) for p in example.panels)


def iter_batches(examples: Iterator[Example], batch_size: int, start: int = 0) -> Iterator[tuple[list[Example], int]]:
    """Batches drawn within one layout (aspect bucket and panel arrangement): an example waits until
    `batch_size` examples of its layout have arrived. Yields (batch, stream position after it): a run that
    resumes from that position starts with the next unread example. Examples still waiting when a run stops
    are read again in the next epoch, not in this one (at most (layouts - 1) x (batch_size - 1) of them)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    waiting: dict[tuple, list[Example]] = {}
    position = start
    for ex in examples:
        position += 1
        key = layout_key(ex)
        group = waiting.setdefault(key, [])
        group.append(ex)
        if len(group) == batch_size:
            del waiting[key]
            yield group, position


def tokens_of(example: Example) -> int:
    if example.encoded is not None:
        return example.encoded.inputs.tokens
    return int(sum(np.prod(p.image.shape[-2:]) for p in example.panels) // 256)
