"""The supervision gate in front of the shard writer, and `aceforge shards audit`."""

import numpy as np
import pytest
import skimage.data
from typer.testing import CliRunner

from flows.cli import app
from mining.maps import cond_maps as cm
from schemas.config import ShardConfig, SupervisionConfig
from store import storage
from store.shard_reader import read_shard_set
from store.shards import write_shard_set
from stages.supervise import Gate, reconcile
from tests.mining.test_supervision import _sample


@pytest.fixture(scope="module")
def samples():
    photo = skimage.data.astronaut()[::4, ::4].copy()
    grey = np.stack([skimage.data.camera()[::4, ::4]] * 3, -1)
    good = [_sample("analysis_grayscale", photo, cm.grayscale(photo)),
            _sample("analysis_canny", photo, cm.canny(photo))]
    bad = [_sample("analysis_grayscale", grey, cm.grayscale(grey)),  # an identity edit
           _sample("control_canny", cm.canny(np.full_like(photo, 90)), np.full_like(photo, 90))]  # an empty map
    return [s.model_copy(update={"key": f"{s.key}{i}"}) for i, s in enumerate(good + bad)]


def test_the_gate_drops_and_counts_by_task_and_reason(samples, tmp_path):
    gate = Gate(SupervisionConfig())
    out = str(tmp_path / "set")
    rep = write_shard_set(gate(samples), out, ShardConfig(), marker_extra=lambda: {"supervision": gate.summary()})
    assert rep.samples == 2 and rep.counts_by_task == {"analysis_canny": 1, "analysis_grayscale": 1}
    sup = storage.read_marker(out)["supervision"]
    assert sup["checked"] == {"analysis_canny": 1, "analysis_grayscale": 2, "control_canny": 1}
    assert sup["dropped"] == {"analysis_grayscale": {"already_grey": 1}, "control_canny": {"flat_region": 1}}
    assert sup["examples"]["analysis_grayscale:already_grey"] == [samples[2].key]
    kept = list(read_shard_set(out))
    assert all(s.lineage.scores["supervision_change"] > 0 for s in kept)
    reconcile("pack", {"analysis_grayscale": 2, "analysis_canny": 1, "control_canny": 1}, gate)
    with pytest.raises(RuntimeError, match="no marker written"):
        reconcile("pack", {"analysis_grayscale": 2, "analysis_canny": 2, "control_canny": 1}, gate)


def test_a_disabled_gate_passes_everything_and_audit_finds_the_bad_ones(samples, tmp_path):
    gate = Gate(SupervisionConfig(enabled=False))
    bad_set, good_set = str(tmp_path / "bad"), str(tmp_path / "good")
    write_shard_set(gate(samples), bad_set, ShardConfig())
    assert sum(gate.tally.checked.values()) == 4 and not gate.tally.failed
    runner = CliRunner()
    res = runner.invoke(app, ["shards", "audit", bad_set])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "already_grey 1" in text and "flat_region 1" in text and "4 samples checked, 2 failing" in text
    write_shard_set(Gate(SupervisionConfig())(samples), good_set, ShardConfig())
    res = runner.invoke(app, ["shards", "audit", good_set])
    assert res.exit_code == 0 and "2 samples checked, 0 failing" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["shards", "audit", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "not a complete shard set" in res.output


def test_the_gate_checks_what_is_written_and_audit_agrees(samples, tmp_path):
    """A PNG sample packed into a JPEG set is checked after its JPEG encoding: the audit of the set then sees
    the same pixels the gate saw."""
    from stages.supervise import audit

    jpg = ShardConfig(image_ext="jpg")
    gate = Gate(SupervisionConfig(), jpg)
    out = str(tmp_path / "jpg")
    written = []

    def keep(it):
        for s in it:
            written.append(s)
            yield s

    rep = write_shard_set(keep(gate(samples)), out, jpg)
    assert rep.samples == len(written) == 2 and all(u.image_ext == "jpg" for s in written for u in s.units)
    failures: list = []
    tally = audit(read_shard_set(out), SupervisionConfig(), failures)
    assert sum(tally.checked.values()) == 2 and failures == []
    assert [s.key for s in read_shard_set(out)] == [s.key for s in written]
