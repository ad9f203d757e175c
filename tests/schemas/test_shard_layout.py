import json

import pytest

from schemas.records import SCHEMA_VERSION
from schemas.shard_layout import MAX_KEY_LEN, decode_sample, encode_sample, sanitize_key


@pytest.mark.parametrize("raw", ["../../etc/passwd", "a/b\\c", "x.y.z", "...a..", "sp ace\tand\nnl", "ünï"])
def test_sanitized_keys_are_safe(raw):
    k = sanitize_key(raw)
    assert k and "/" not in k and "\\" not in k and "." not in k and ".." not in k
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in k)


def test_long_keys_stay_distinct_and_bounded():
    a, b = sanitize_key("x" * 500 + "a"), sanitize_key("x" * 500 + "b")
    assert a != b and len(a) <= MAX_KEY_LEN and len(b) <= MAX_KEY_LEN


def test_empty_key_refused():
    for raw in ("///", "..", ""):
        with pytest.raises(ValueError, match="no usable characters"):
            sanitize_key(raw)


def test_encode_layout_and_round_trip(samples):
    s = samples[2]  # inpainting: its edit unit has a mask
    raw = encode_sample(s)
    assert set(raw) == {"__key__", "json", "txt", "in0.png", "in0.mask.png", "target.png"}
    meta = json.loads(raw["json"])
    assert meta["schema_version"] == SCHEMA_VERSION and meta["units"][0]["mask"] == "in0.mask.png"
    assert raw["txt"].decode() == s.instruction
    assert decode_sample(raw) == s
    ref = samples[1]
    raw_ref = encode_sample(ref)
    assert {"in0.png", "in1.png"} <= set(raw_ref) and decode_sample(raw_ref) == ref


def test_decode_refuses_unknown_version_and_missing_members(samples):
    raw = encode_sample(samples[0])
    meta = json.loads(raw["json"])
    meta["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version 99"):
        decode_sample({**raw, "json": json.dumps(meta).encode()})
    del raw["target.png"]
    with pytest.raises(ValueError, match="lacks member 'target.png'"):
        decode_sample(raw)
    with pytest.raises(TypeError, match="raw bytes"):
        decode_sample({**encode_sample(samples[0]), "in0.png": object()})
