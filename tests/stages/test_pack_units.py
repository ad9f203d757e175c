"""A shard set packed by units is append-only: a new unit writes new shards only, unchanged units keep their
tars byte for byte, a unit no longer planned loses its shards (and nothing else), counts reconcile."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from stages.pack_units import UnitPackStage
from store import storage
from store.shard_reader import read_shard_set
from store.shards import read_manifest
from tests.conftest import make_sample


class Planted(UnitPackStage):
    """Packs planted input folders: folder `name` with marker counts {"samples": n} gives n samples."""

    name = "pack-planted"

    @property
    def out(self) -> str:
        return self.layout.shards("planted")

    def unit_inputs(self):
        return [(d.rsplit("/", 1)[-1], d) for d in self.params["dirs"]]

    def inputs(self):
        return list(self.params["dirs"])

    def settings(self):
        return {"shards": self.cfg.shards.model_dump(mode="json")}

    def unit_promised(self, k):
        return {"general_editing": storage.read_marker(self.params["dirs"][k])["counts"]["samples"]}

    def unit_samples(self, k):
        d = self.params["dirs"][k]
        name = d.rsplit("/", 1)[-1]
        rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
        made = storage.read_marker(d)["counts"].get("made", self.unit_promised(k)["general_editing"])
        for i in range(made):
            yield make_sample(i, rng, key=f"{name}-{i}")


def plant(root: Path, name: str, n: int, **counts) -> str:
    d = str(root / "inputs" / name)
    storage.write_marker(d, {"counts": {"samples": n, **counts}})
    return d


def tars(out: str) -> dict[str, tuple[str, int]]:
    """tar name -> (sha256 of its bytes, mtime_ns)"""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in Path(out).glob("*.tar")}


@pytest.fixture
def cfg(tmp_path):
    return RunConfig(root=str(tmp_path / "root"), shards={"maxcount": 3}, supervision={"enabled": False})


def test_a_new_unit_adds_shards_and_keeps_every_existing_tar(cfg, tmp_path):
    ex = LocalExecutor()
    dirs = [plant(tmp_path, "a", 4), plant(tmp_path, "b", 2), plant(tmp_path, "c", 0)]
    first = ex.run(Planted(cfg, dirs=dirs))
    out = first.outputs[0]
    before = tars(out)
    assert first.counts["samples"] == 6 and first.counts["shards"] == len(before) == 3  # a: 3+1, b: 2, c: none
    assert all(name.startswith("shard-a-") or name.startswith("shard-b-") for name in before)

    dirs.insert(1, plant(tmp_path, "new", 5))  # a unit planted between others: nothing after it shifts
    grown = ex.run(Planted(cfg, dirs=dirs))
    after = tars(out)
    assert {k: after[k] for k in before} == before  # same bytes, not even rewritten
    assert set(after) - set(before) == {n for n in after if n.startswith("shard-new-")} and len(after) == 5
    assert grown.execution.ran == 1 and grown.execution.skipped == 3
    assert grown.counts["samples"] == 11 and grown.counts["kept_shards"] == 3
    rows = [r.shard for r in read_manifest(out)]
    assert [r.split("-")[1] for r in rows] == ["a", "a", "new", "new", "b"]  # plan order
    assert len({s.key for s in read_shard_set(out)}) == 11

    again = ex.run(Planted(cfg, dirs=dirs))  # a second run: current, nothing written
    assert again == grown.model_copy(update={"execution": None}) and tars(out) == after


def test_a_unit_no_longer_planned_loses_its_shards_and_only_those(cfg, tmp_path):
    ex = LocalExecutor()
    dirs = [plant(tmp_path, "a", 2), plant(tmp_path, "b", 4)]
    out = ex.run(Planted(cfg, dirs=dirs)).outputs[0]
    foreign = [Path(out) / "notes.txt", Path(out) / "other-000000.tar"]
    for f in foreign:
        f.write_bytes(b"not the packer's")
    (Path(out) / "shard-000000.tar").write_bytes(b"a one-writer shard of the same prefix")
    kept = {k: v for k, v in tars(out).items() if k.startswith("shard-a-")}
    storage.write_marker(dirs[0], {"counts": {"samples": 2}})  # same content: the unit keeps its name
    plant(tmp_path, "b", 3)  # b changed: a new unit name, its old shards go
    rep = ex.run(Planted(cfg, dirs=dirs))
    now = tars(Path(out))
    assert {k: v for k, v in now.items() if k.startswith("shard-a-")} == kept
    b = [k for k in now if k.startswith("shard-b-")]
    assert len(b) == 1 and rep.counts["samples"] == 5 and rep.counts["shards"] == 2
    assert not (Path(out) / "shard-000000.tar").exists() and all(f.exists() for f in foreign)
    assert len(list(Path(out).glob("shard-b-*.unit.json"))) == 1  # the old unit's file went too
    assert len(list(Path(out).glob("shard-b-*.samples.parquet"))) == 1
    assert sorted(p.name.split("-")[1] for p in (Path(out) / "thumbs").iterdir()) == ["a", "b"]  # old b's went


def test_a_unit_whose_samples_do_not_reconcile_writes_nothing(cfg, tmp_path):
    dirs = [plant(tmp_path, "a", 3, made=2)]  # promises 3, gives 2
    stage = Planted(cfg, dirs=dirs)
    with pytest.raises(RuntimeError, match="supervision gate saw"):
        LocalExecutor().run(stage)
    assert not stage.item_done(0) and not list(Path(stage.out).glob("*.tar")) and stage.report() is None


def test_units_write_the_same_bytes_wherever_and_whenever(tmp_path):
    shas = []
    for run in ("one", "two"):
        cfg = RunConfig(root=str(tmp_path / run), shards={"maxcount": 2}, supervision={"enabled": False})
        dirs = [plant(tmp_path / run, "a", 3), plant(tmp_path / run, "b", 1)]
        out = LocalExecutor().run(Planted(cfg, dirs=dirs)).outputs[0]
        shas.append({k: v[0] for k, v in tars(out).items()})
    assert shas[0] == shas[1] and len(shas[0]) == 3


def test_units_score_every_sample_into_its_json_and_the_samples_table_and_write_the_report(cfg, tmp_path):
    import json

    from schemas.io import iter_tar_samples
    from store.sample_table import read_samples

    dirs = [plant(tmp_path, "a", 4), plant(tmp_path, "b", 2)]
    out = LocalExecutor().run(Planted(cfg.model_copy(update={"models_dir": str(tmp_path / "no-models")}),
                                      dirs=dirs)).outputs[0]
    table = read_samples(out).to_pylist()
    assert [r["key"] for r in table] == ["a-0", "a-1", "a-2", "a-3", "b-0", "b-1"]  # plan order
    in_json = {}
    for row in read_manifest(out):
        for raw in iter_tar_samples(storage.join(out, row.shard)):
            in_json[raw["__key__"]] = (row.shard, json.loads(raw["json"])["quality"])
    for r in table:
        shard, q = in_json[r["key"]]
        assert r["shard"] == shard and q["changed_in_mask"] == r["changed_in_mask"] > 0.5  # random images: changed
        assert q["siglip_similarity"] is None and r["siglip_similarity"] is None  # no weights: no model score
        assert q["changed_out_mask"] is None  # no mask
    thumbs = [r["thumb"] for r in table if r["thumb"]]
    assert len(thumbs) == 6 and all((Path(out) / t).is_file() for t in thumbs)  # 4 per task per unit
    assert storage.read_marker(out)["quality"]["pair_model"] == "absent"
    page = (Path(out) / "report.html").read_text()
    assert "general_editing" in page and "model absent" in page and thumbs[0] in page


def test_the_marker_and_report_carry_what_the_stages_upstream_dropped(tmp_path):
    root = tmp_path / "root"
    cfg = RunConfig(root=str(root), supervision={"enabled": False}, models_dir=str(tmp_path / "none"))
    stage_dir = root / "synth" / "objects"
    storage.write_marker(str(stage_dir), {"counts": {"dropped": {"smear": 3, "seam": 0, "depth": {"absent": 2}}}})
    part = str(stage_dir / "part-00000")
    storage.write_marker(part, {"counts": {"samples": 2}})
    outside = plant(tmp_path, "a", 1)  # an input outside the root: nothing above it is read
    storage.write_marker(str(tmp_path), {"counts": {"dropped": {"not_mine": 9}}})
    out = LocalExecutor().run(Planted(cfg, dirs=[part, outside])).outputs[0]
    assert storage.read_marker(out)["upstream_drops"] == {"synth/objects": {"smear": 3, "depth: absent": 2}}
    page = (Path(out) / "report.html").read_text()
    assert "synth/objects" in page and "depth: absent 2, smear 3" in page and "not_mine" not in page
