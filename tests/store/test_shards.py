import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from schemas.config import ShardConfig
from schemas.shard_layout import decode_sample
from store import storage
from store.shard_reader import read_shard_set
from store.shards import ShardInputChanged, read_manifest, shard_uris, write_shard_set
from tests.conftest import make_sample

REPO = Path(__file__).resolve().parents[2]


def _sha_by_shard(uri: str) -> dict[str, str]:
    return {r.shard: r.sha256 for r in read_manifest(uri)}


def test_round_trip_and_manifest(samples, tmp_path):
    uri = str(tmp_path / "set")
    rep = write_shard_set(samples, uri, ShardConfig(maxcount=3))
    assert (rep.shards, rep.samples) == (4, 10)
    assert rep.counts_by_task == {"general_editing": 4, "reference_generation": 3, "inpainting": 3}
    rows = read_manifest(uri)
    assert [r.samples for r in rows] == [3, 3, 3, 1]
    for r in rows:
        path = tmp_path / "set" / r.shard
        assert r.bytes == path.stat().st_size
        assert r.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(read_shard_set(uri, verify=True)) == samples
    assert not [p for p in os.listdir(tmp_path / "set") if storage.TMP_TAG in p]


def test_maxsize_splits_shards(samples, tmp_path):
    rep = write_shard_set(samples, str(tmp_path / "set"), ShardConfig(maxsize=20_000))
    assert rep.shards > 1 and rep.samples == 10
    assert list(read_shard_set(str(tmp_path / "set"))) == samples


def test_webdataset_reads_every_sample_intact(samples, tmp_path):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    ds = wds.WebDataset(shard_uris(uri), shardshuffle=False, empty_check=False)
    got = [decode_sample(raw) for raw in ds]
    assert got == samples


@pytest.mark.slow
def test_ray_data_reads_every_sample_intact(samples, tmp_path):
    import ray

    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.read_webdataset(shard_uris(uri), decoder=None)
        rows = ds.take_all()
    finally:
        ray.shutdown()
    got = sorted((decode_sample({k: v for k, v in r.items() if v is not None}) for r in rows), key=lambda s: s.key)
    assert got == sorted(samples, key=lambda s: s.key)


def test_plain_tar_lists_the_documented_members(samples, tmp_path):
    uri = str(tmp_path / "set")
    write_shard_set(samples[:3], uri, ShardConfig(maxcount=10))
    out = subprocess.run(["tar", "-tf", shard_uris(uri)[0]], check=True, capture_output=True, text=True).stdout.split()
    assert out == [
        "sample-0000.in0.png", "sample-0000.json", "sample-0000.target.png", "sample-0000.txt",
        "sample-0001.in0.png", "sample-0001.in1.png", "sample-0001.json", "sample-0001.target.png", "sample-0001.txt",
        "sample-0002.in0.mask.png", "sample-0002.in0.png", "sample-0002.json", "sample-0002.target.png",
        "sample-0002.txt",
    ]


def test_rewriting_a_complete_set_is_a_noop(samples, tmp_path):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=3))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "set").iterdir()}

    def must_not_be_read():
        raise AssertionError("a complete shard set must not consume its input")
        yield

    again = write_shard_set(must_not_be_read(), uri, ShardConfig(maxcount=3))
    assert again.skipped_existing and again.samples == 10
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "set").iterdir()} == before


def _failing(samples, after):
    for i, s in enumerate(samples):
        if i == after:
            raise RuntimeError("boom")
        yield s


def test_interrupted_write_leaves_no_counted_or_partial_shard_and_resumes(samples, tmp_path):
    uri = str(tmp_path / "set")
    cfg = ShardConfig(maxcount=3)
    with pytest.raises(RuntimeError, match="boom"):
        write_shard_set(_failing(samples, after=7), uri, cfg)
    names = sorted(os.listdir(tmp_path / "set"))
    assert storage.MARKER not in names and "manifest.parquet" not in names
    assert [n for n in names if n.endswith(".tar")] == ["shard-000000.tar", "shard-000001.tar"]
    assert not [n for n in names if storage.TMP_TAG in n]
    with pytest.raises(FileNotFoundError, match="not a complete shard set"):
        read_manifest(uri)
    rep = write_shard_set(samples, uri, cfg)
    assert rep.resumed_shards == 2 and rep.samples == 10
    write_shard_set(samples, str(tmp_path / "clean"), cfg)
    assert _sha_by_shard(uri) == _sha_by_shard(str(tmp_path / "clean"))  # byte-identical tars


def test_resume_refuses_a_changed_input(samples, tmp_path):
    uri = str(tmp_path / "set")
    with pytest.raises(RuntimeError):
        write_shard_set(_failing(samples, after=5), uri, ShardConfig(maxcount=2))
    with pytest.raises(ShardInputChanged, match="input changed"):
        write_shard_set(samples[1:], uri, ShardConfig(maxcount=2))


_KILL_SCRIPT = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from tests.conftest import make_sample
from schemas.config import ShardConfig
from store.shards import write_shard_set
rng = np.random.default_rng(0)
def slow():
    for i in range(40):
        time.sleep(0.05)
        yield make_sample(i, rng)
write_shard_set(slow(), {uri!r}, ShardConfig(maxcount=4))
"""


@pytest.mark.slow
def test_killed_write_leaves_a_consistent_set_and_a_rerun_completes_it(tmp_path):
    uri = str(tmp_path / "set")
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT.format(repo=str(REPO), uri=uri)])
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "set" / "shard-000003.stats.json").exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    names = sorted(os.listdir(tmp_path / "set"))
    assert storage.MARKER not in names and "manifest.parquet" not in names
    for n in names:
        if n.endswith(".tar"):  # every tar under a final name is complete and readable
            with tarfile.open(tmp_path / "set" / n) as tar:
                assert len([m for m in tar.getmembers() if m.name.endswith(".json")]) == 4
    rng = np.random.default_rng(0)
    rep = write_shard_set((make_sample(i, rng) for i in range(40)), uri, ShardConfig(maxcount=4))
    assert rep.samples == 40 and rep.resumed_shards >= 3
    rng = np.random.default_rng(0)
    write_shard_set((make_sample(i, rng) for i in range(40)), str(tmp_path / "clean"), ShardConfig(maxcount=4))
    assert _sha_by_shard(uri) == _sha_by_shard(str(tmp_path / "clean"))


def test_keys_are_sanitized_and_duplicates_refused(tmp_path):
    rng = np.random.default_rng(0)
    evil = [make_sample(0, rng, key="../../etc/passwd"), make_sample(1, rng, key="a/b.c")]
    uri = str(tmp_path / "set")
    write_shard_set(evil, uri)
    with tarfile.open(shard_uris(uri)[0]) as tar:
        names = tar.getnames()
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert {n.split(".")[0] for n in names} == {"etc_passwd", "a_b_c"}
    assert [s.key for s in read_shard_set(uri)] == ["../../etc/passwd", "a/b.c"]  # original key kept in json
    dup = [make_sample(0, rng, key="x.y"), make_sample(1, rng, key="x/y")]
    with pytest.raises(ValueError, match="duplicate sample key 'x_y'"):
        write_shard_set(dup, str(tmp_path / "dup"))
    assert not (tmp_path / "dup" / storage.MARKER).exists()



def test_empty_input_gives_an_empty_complete_set(tmp_path):
    rep = write_shard_set([], str(tmp_path / "set"))
    assert (rep.shards, rep.samples) == (0, 0)
    assert not [n for n in os.listdir(tmp_path / "set") if n.endswith(".tar")]
    assert json.loads((tmp_path / "set" / storage.MARKER).read_text())["samples"] == 0


def test_long_keys_fit_in_tar_member_names(tmp_path):
    rng = np.random.default_rng(0)
    s = make_sample(0, rng, key="k" * 300, with_mask=True)
    uri = str(tmp_path / "set")
    write_shard_set([s], uri)
    assert list(read_shard_set(uri)) == [s]


def test_remote_fsspec_target_round_trip(samples):
    uri = "memory://aceforge-shards/set"
    rep = write_shard_set(samples, uri, ShardConfig(maxcount=4))
    assert rep.shards == 3 and shard_uris(uri)[0].startswith("memory://")
    assert list(read_shard_set(uri, verify=True)) == samples
    again = write_shard_set([], uri)
    assert again.skipped_existing


def test_extend_keeps_unchanged_shards_and_reopens_a_short_last_one(tmp_path):
    rng = np.random.default_rng(0)
    s = [make_sample(i, rng) for i in range(9)]
    out = str(tmp_path / "set")
    cfg = ShardConfig(maxcount=3)
    write_shard_set(s[:5], out, cfg)  # shards of 3 and 2
    first = _sha_by_shard(out)
    storage.fs_path(out)[0].rm(storage.join(out, storage.MARKER))  # the input grew: the stage drops its marker
    rep = write_shard_set(s[:8], out, cfg, extend=True)
    after = _sha_by_shard(out)
    assert rep.resumed_shards == 1 and rep.samples == 8 and len(after) == 3
    assert after["shard-000000.tar"] == first["shard-000000.tar"]  # kept as it was
    assert [r.samples for r in read_manifest(out)] == [3, 3, 2]
    assert [x.key for x in read_shard_set(out)] == [x.key for x in s[:8]]
    # a sample of shard 0 gone: everything from shard 0 is written again, nothing stale stays
    storage.fs_path(out)[0].rm(storage.join(out, storage.MARKER))
    rep = write_shard_set([s[0], *s[2:9]], out, cfg, extend=True)
    assert rep.resumed_shards == 0 and [x.key for x in read_shard_set(out)] == [x.key for x in [s[0], *s[2:9]]]
    # the same keys with another instruction in shard 1: shard 0 kept, shard 1 on written again
    storage.fs_path(out)[0].rm(storage.join(out, storage.MARKER))
    redone = [*[s[0]], *s[2:9]]
    redone[4] = redone[4].model_copy(update={"instruction": "Something else entirely in {image}."})
    rep = write_shard_set(redone, out, cfg, extend=True)
    assert rep.resumed_shards == 1
    assert [x.instruction for x in read_shard_set(out)] == [x.instruction for x in redone]
    with pytest.raises(ShardInputChanged):  # without extend a changed input is still an error
        storage.fs_path(out)[0].rm(storage.join(out, storage.MARKER))
        write_shard_set(s[:8], out, cfg)


def _with_jpg_and_webp(samples):
    """The fixture's samples with a JPEG target in sample 4 and a WEBP edit image in sample 7 (as a corpus of
    mixed formats gives, passed through unchanged at ingest)."""
    import io

    from PIL import Image

    from schemas.records import ConditionUnit

    def reencode(unit, fmt, ext):
        buf = io.BytesIO()
        Image.open(io.BytesIO(unit.image)).convert("RGB").save(buf, format=fmt, quality=90)
        return ConditionUnit(role=unit.role, image=buf.getvalue(), image_ext=ext, mask=unit.mask)

    out = list(samples)
    out[4] = out[4].model_copy(update={"target": reencode(out[4].target, "JPEG", "jpg")})
    out[7] = out[7].model_copy(update={"units": [reencode(out[7].units[0], "WEBP", "webp"), *out[7].units[1:]]})
    return out


def _pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_every_image_field_has_one_extension_and_the_same_pixels(samples, tmp_path):
    mixed = _with_jpg_and_webp(samples)
    uri = str(tmp_path / "set")
    write_shard_set(mixed, uri, ShardConfig(maxcount=4, image_ext="png"))
    names = [n for s in shard_uris(uri) for n in tarfile.open(s).getnames()]
    exts = {n.split(".", 1)[1] for n in names}
    assert exts == {"json", "txt", "in0.png", "in1.png", "in0.mask.png", "target.png"}
    back = {s.key: s for s in read_shard_set(uri)}
    for s in mixed:  # png re-encoding is lossless: every image decodes to the pixels it had
        got = back[s.key]
        assert np.array_equal(_pixels(got.target.image), _pixels(s.target.image))
        assert all(np.array_equal(_pixels(a.image), _pixels(b.image)) for a, b in zip(got.units, s.units))
    assert back["sample-0000"].target.image == samples[0].target.image  # already png: the bytes are kept
    assert storage.read_marker(uri)["fields"] == sorted(exts)


def test_jpg_sets_store_every_image_as_jpeg_and_keep_jpeg_bytes(samples, tmp_path):
    mixed = _with_jpg_and_webp(samples)
    uri = str(tmp_path / "set")
    write_shard_set(mixed, uri, ShardConfig(maxcount=4, image_ext="jpg"))
    names = [n for s in shard_uris(uri) for n in tarfile.open(s).getnames()]
    assert {n.split(".", 1)[1] for n in names} == {"json", "txt", "in0.jpg", "in1.jpg", "in0.mask.png", "target.jpg"}
    back = {s.key: s for s in read_shard_set(uri)}
    assert back["sample-0004"].target.image == mixed[4].target.image  # a JPEG keeps its bytes
    assert back["sample-0002"].units[0].mask == mixed[2].units[0].mask  # masks stay png, untouched
    a, b = _pixels(back["sample-0000"].target.image), _pixels(mixed[0].target.image)
    assert a.shape == b.shape and not np.array_equal(a, b)  # a png re-encoded as JPEG (of random noise: lossy)


def test_hugging_face_datasets_reads_every_sample_intact(samples, tmp_path, monkeypatch):
    """`datasets.load_dataset(<set folder>)` with no arguments: the set's dataset card types every field, so a
    field the first samples lack (a reference, a mask) is read, and a sample without it reads None."""
    import datasets
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    mixed = _with_jpg_and_webp(samples)
    uri = str(tmp_path / "set")
    write_shard_set(mixed, uri, ShardConfig(maxcount=4, image_ext="png"))  # lossless: pixels compare exactly
    ds = datasets.load_dataset(uri, split="train")
    assert len(ds) == len(mixed)
    rows = {r["__key__"]: r for r in ds.cast_column("target.png", datasets.Image(decode=False))
            .cast_column("in0.png", datasets.Image(decode=False)).cast_column("in1.png", datasets.Image(decode=False))
            .cast_column("in0.mask.png", datasets.Image(decode=False))}
    for s in mixed:
        r = rows[s.key]
        assert r["json"]["task"] == s.task and r["txt"] == s.instruction
        assert np.array_equal(_pixels(r["target.png"]["bytes"]), _pixels(s.target.image))
        assert np.array_equal(_pixels(r["in0.png"]["bytes"]), _pixels(s.units[0].image))
        has_ref = len(s.units) > 1
        assert (r["in1.png"] is not None) == has_ref
        if has_ref:
            assert np.array_equal(_pixels(r["in1.png"]["bytes"]), _pixels(s.units[1].image))
        assert (r["in0.mask.png"]["bytes"] if r["in0.mask.png"] else None) == s.units[0].mask


def test_auto_takes_the_first_images_format_and_keeps_it_on_resume(samples, tmp_path):
    mixed = _with_jpg_and_webp(samples)
    uri = str(tmp_path / "set")
    write_shard_set(mixed, uri, ShardConfig(maxcount=4))  # auto: the first target is png
    names = {n.split(".", 1)[1] for s in shard_uris(uri) for n in tarfile.open(s).getnames()}
    assert {"target.png", "in0.png"} <= names and not any(n.endswith((".jpg", ".webp")) for n in names)
    assert storage.read_marker(uri)["config"]["image_ext"] == "png"
    jpeg_first = [mixed[4], *mixed[:4], *mixed[5:]]  # a JPEG target first: the set is JPEG
    write_shard_set(jpeg_first, str(tmp_path / "jpg"), ShardConfig(maxcount=4))
    assert storage.read_marker(str(tmp_path / "jpg"))["config"]["image_ext"] == "jpg"
