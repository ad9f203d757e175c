"""The field layout of one AceSample inside a WebDataset tar, both ways.

A sample with key K is these tar members (webdataset groups them by K, the name up to the first dot):

    K.json            metadata: schema_version, task, instruction, caption, lineage, unit layout, quality scores
    K.txt             the instruction, UTF-8 (for readers that want only text + target)
    K.in0.<ext>       input unit 0 image (png / jpg / webp), in {image1} order; in1, in2, ...
    K.in0.mask.png    input unit 0 mask, mode L, 255 = generate (only when the unit has a mask)
    K.target.<ext>    target image
    K.target.mask.png target mask (only when present)

Keys hold only [A-Za-z0-9_-]: no dots (webdataset would split there), no path separators, no `..`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from schemas.records import SCHEMA_VERSION, AceSample, ConditionUnit, Lineage, Role

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY_LEN = 80  # tar's USTAR format caps member names at 100 characters (no '/' to split on)


def sanitize_key(raw: str) -> str:
    """A key safe for tar member names and webdataset grouping. Deterministic; never empty."""
    key = _BAD_KEY_CHARS.sub("_", raw).strip("_")
    if not key:
        raise ValueError(f"sample key {raw!r} has no usable characters")
    if len(key) > MAX_KEY_LEN:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
        key = f"{key[: MAX_KEY_LEN - 17]}_{digest}"
    return key


def _unit_fields(prefix: str, unit: ConditionUnit, out: dict[str, bytes]) -> dict[str, Any]:
    img_name = f"{prefix}.{unit.image_ext}"
    out[img_name] = unit.image
    meta: dict[str, Any] = {"role": unit.role.value, "image": img_name, "mask": None}
    if unit.mask is not None:
        mask_name = f"{prefix}.mask.png"
        out[mask_name] = unit.mask
        meta["mask"] = mask_name
    return meta


def encode_sample(sample: AceSample) -> dict[str, Any]:
    """AceSample -> {'__key__': str, '<ext>': bytes, ...} ready for a TarWriter with encoder=False."""
    out: dict[str, Any] = {"__key__": sanitize_key(sample.key)}
    files: dict[str, bytes] = {}
    units = [_unit_fields(f"in{i}", u, files) for i, u in enumerate(sample.units)]
    target = _unit_fields("target", sample.target, files)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "key": sample.key,
        "task": sample.task,
        "instruction": sample.instruction,
        "caption": sample.caption,
        "lineage": sample.lineage.model_dump(mode="json"),
        "units": units,
        "target": target,
    }
    if sample.quality:
        meta["quality"] = sample.quality
    out["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    out["txt"] = sample.instruction.encode("utf-8")
    out.update(files)
    return out


def _as_bytes(v: Any, name: str) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"field {name!r} must be raw bytes (read shards without decoding), got {type(v).__name__}")


def decode_sample(raw: dict[str, Any]) -> AceSample:
    """The inverse of encode_sample, from a raw webdataset / Ray Data row (bytes values)."""
    if "json" not in raw:
        raise ValueError(f"sample {raw.get('__key__')!r} has no json member")
    meta_raw = raw["json"]
    meta = meta_raw if isinstance(meta_raw, dict) else json.loads(_as_bytes(meta_raw, "json").decode("utf-8"))
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"sample {raw.get('__key__')!r} has schema_version {version}, this reader knows {SCHEMA_VERSION}")

    def unit(m: dict[str, Any]) -> ConditionUnit:
        if m["image"] not in raw:
            raise ValueError(f"sample {raw.get('__key__')!r} lacks member {m['image']!r}")
        mask = _as_bytes(raw[m["mask"]], m["mask"]) if m.get("mask") else None
        return ConditionUnit(role=Role(m["role"]), image=_as_bytes(raw[m["image"]], m["image"]),
                             image_ext=m["image"].rsplit(".", 1)[1], mask=mask)

    return AceSample(
        key=meta["key"], task=meta["task"], instruction=meta["instruction"], caption=meta.get("caption"),
        units=[unit(m) for m in meta["units"]], target=unit(meta["target"]),
        lineage=Lineage.model_validate(meta["lineage"]), quality=meta.get("quality") or {},
    )


def sample_group(key: str, source_ids: list[str] | None) -> str:
    """What the held-out split is drawn over: the images a sample is made from (its lineage's source ids),
    so the samples of one source (a removal and its reverse addition, the inpainting and outpainting of one
    photo) are held out together, never one trained while the other is evaluated; the key without them."""
    return "|".join(sorted(source_ids)) if source_ids else key
