import numpy as np
import pytest

from schemas.config import ShardConfig, TrainConfig
from store.shards import shard_uris, write_shard_set
from tests.conftest import make_sample
from trainer.data import iter_examples, keep_sample, tokens_of


@pytest.fixture
def urls(tmp_path):
    rng = np.random.default_rng(0)
    tasks = ["general_editing", "reference_generation", "inpainting"]
    samples = [make_sample(i, rng, task=tasks[i % 3], with_mask=i % 3 == 2) for i in range(9)]
    write_shard_set(samples, str(tmp_path / "set"), ShardConfig(maxcount=3))
    return shard_uris(str(tmp_path / "set"))


def _keys(it, n):
    return [next(it).key for _ in range(n)]


def test_stage_one_takes_zero_ref_tasks_and_resume_skips_exactly(urls):
    cfg = TrainConfig(phase=1, max_tokens=24)
    first = _keys(iter_examples(urls, cfg), 8)
    assert all(int(k[-4:]) % 3 != 1 for k in first)  # no reference_generation sample
    assert len(set(first[:6])) == 6 and first[6:] == first[:2]  # 6 of 9 kept, then the next epoch
    assert _keys(iter_examples(urls, cfg, start=3), 5) == first[3:8]
    ex = next(iter_examples(urls, cfg))
    assert 0 < tokens_of(ex) <= 24


def test_workers_split_the_data_without_overlap(urls):
    cfg = TrainConfig(phase=2, max_tokens=24)
    whole = set(_keys(iter_examples(urls, cfg), 9))
    # 3 shards, 2 workers: split by shard (rank 0 gets shards 0 and 2, rank 1 shard 1)
    parts = [set(_keys(iter_examples(urls, cfg, rank=r, world=2), 3 if r else 6)) for r in (0, 1)]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == whole


def test_stage_two_weights():
    cfg = TrainConfig(phase=2, task_weights={"inpainting": 0.0, "general_editing": 4.0})
    keys = [f"k{i}" for i in range(2000)]
    assert not any(keep_sample("inpainting", k, cfg, 0) for k in keys)
    assert all(keep_sample("general_editing", k, cfg, 0) for k in keys)
    kept = sum(keep_sample("layer_fusion", k, cfg, 0) for k in keys) / len(keys)  # weight 1 of 4
    assert 0.2 < kept < 0.3
    assert not keep_sample("reference_generation", "k", TrainConfig(phase=1), 0)


def test_fewer_shards_than_workers_split_by_sample(urls):
    cfg = TrainConfig(phase=2, max_tokens=24)
    one = urls[:1]  # 3 samples, 2 workers
    whole = _keys(iter_examples(one, cfg), 3)
    r0, r1 = _keys(iter_examples(one, cfg, 0, 2), 2), _keys(iter_examples(one, cfg, 1, 2), 1)
    assert r0 == [whole[0], whole[2]] and r1 == [whole[1]]


def _set(tmp_path, name, n, maxcount):
    from trainer.data import ShardSet

    rng = np.random.default_rng(len(name) + n)
    samples = [make_sample(i, rng, key=f"{name}-{i:02d}") for i in range(n)]
    write_shard_set(samples, str(tmp_path / name), ShardConfig(maxcount=maxcount))
    from store.shards import read_manifest
    rows = read_manifest(str(tmp_path / name))
    return ShardSet(tuple(shard_uris(str(tmp_path / name))), tuple(r.samples for r in rows))


def test_two_sets_train_as_one_interleaved_mixture_that_resumes_exactly(tmp_path):
    a, b = _set(tmp_path, "a", 6, 3), _set(tmp_path, "b", 3, 3)  # 2 shards of 3, 1 shard of 3
    cfg = TrainConfig(phase=2, max_tokens=24)
    epoch = _keys(iter_examples([a, b], cfg), 9)
    assert sorted(epoch) == sorted([f"a-{i:02d}" for i in range(6)] + [f"b-{i:02d}" for i in range(3)])
    assert {k[0] for k in epoch[:2]} == {"a", "b"}  # both sets from the start, not one set after the other
    for n in range(1, 10):  # every prefix holds set b at its share (3 of 9), within one sample
        assert abs(sum(k[0] == "b" for k in epoch[:n]) - n / 3) <= 1, epoch
    stream = _keys(iter_examples([a, b], cfg), 14)
    assert stream[:9] == epoch and stream[9:] == epoch[:5]  # the next epoch repeats the mixture
    assert _keys(iter_examples([a, b], cfg, start=4), 10) == stream[4:14]  # resume: the same examples
    # two workers: each takes its share of every set; together one epoch, without overlap
    parts = [_keys(iter_examples([a, b], cfg, rank=r, world=2), n) for r, n in ((0, 5), (1, 4))]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(epoch)
    assert {k[0] for k in parts[0][:2]} == {"a", "b"}


def _planted(tmp_path, plant):
    """A set of 3 samples written by the project's writer, plus a tar written with tarfile holding one sample
    that `plant(raw)` altered."""
    import io
    import tarfile

    from schemas.shard_layout import encode_sample

    rng = np.random.default_rng(3)
    uri = str(tmp_path / "set")
    write_shard_set([make_sample(i, rng, key=f"ok-{i}") for i in range(3)], uri, ShardConfig(maxcount=3))
    raw = encode_sample(make_sample(9, rng, key="odd-9"))
    plant(raw)
    tar_path = tmp_path / "planted.tar"
    with tarfile.open(tar_path, "w") as tar:
        for ext, data in raw.items():
            if not ext.startswith("__"):
                info = tarfile.TarInfo(f"{raw['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return shard_uris(uri) + [str(tar_path)], str(tar_path)


def _retask(raw, task="teleport_editing"):
    import json

    meta = json.loads(raw["json"])
    meta["task"] = task
    raw["json"] = json.dumps(meta).encode()


@pytest.mark.parametrize("phase", [1, 2])
def test_an_unknown_task_is_a_counted_skip_that_names_the_sample(tmp_path, phase, capsys):
    from trainer.data import DataCounts

    urls, tar = _planted(tmp_path, _retask)
    counts = DataCounts()
    keys = _keys(iter_examples(urls, TrainConfig(phase=phase, max_tokens=24), counts=counts), 7)
    assert keys == ["ok-0", "ok-1", "ok-2"] * 2 + ["ok-0"]
    reason = "unknown task 'teleport_editing'"
    assert counts.skipped[reason] == 2  # once per epoch
    assert counts.kept == 7 and sum(counts.skipped.values()) == 2  # nothing else skipped
    assert counts.read == counts.kept + sum(counts.skipped.values())
    assert counts.named[reason] == f"sample 'odd-9' of {tar}"
    out = capsys.readouterr().out
    assert out.count("teleport_editing") == 1 and "odd-9" in out and tar in out  # named once, then counted
    assert reason in counts.summary()


def test_held_out_samples_of_an_unknown_task_are_left_out(tmp_path):
    import json

    from trainer.data import iter_held_out

    urls, _ = _planted(tmp_path, _retask)
    cfg = TrainConfig(phase=2, max_tokens=24, eval_fraction=0.999, eval_samples=10)
    assert [json.loads(r["json"])["key"] for r in iter_held_out(urls, cfg)] == ["ok-0", "ok-1", "ok-2"]


def test_undecodable_image_bytes_fail_naming_the_sample_its_tar_and_member(tmp_path):
    def garble(raw):
        raw["in0.png"] = b"\x89PNG not really"

    urls, tar = _planted(tmp_path, garble)
    with pytest.raises(ValueError) as e:
        _keys(iter_examples(urls, TrainConfig(phase=2, max_tokens=24)), 4)
    msg = str(e.value)
    assert "\n" not in msg and "BytesIO" not in msg
    assert "'odd-9'" in msg and tar in msg and "odd-9.in0.png" in msg


def test_the_run_data_counts_of_several_workers_merge_and_reconcile(tmp_path):
    from trainer.data import DataCounts, merge_counts

    a, b = DataCounts(), DataCounts()
    a.add("held out")
    a.keep(), a.keep(), b.keep()
    b.add("unknown task 'x'", "sample 'k' of t.tar")
    a.write(str(tmp_path), rank=0)
    b.write(str(tmp_path), rank=1)
    total = merge_counts(str(tmp_path))
    assert (total.read, total.kept, dict(total.skipped)) == (5, 3, {"held out": 1, "unknown task 'x'": 1})
    assert total.summary() == "5 samples read = 3 kept + 1 held out + 1 unknown task 'x'"
