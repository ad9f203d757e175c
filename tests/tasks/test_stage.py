import json

import pytest

from schemas.config import RunConfig
from tasks.mine_pairs import MineStage
from tasks.pack import PackStage
from tasks.stage import Stage, build


def test_a_stage_travels_as_its_spec_and_names_its_units(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"), mining={"k": 7})
    stage = MineStage(cfg, preset="general_editing")
    spec = json.loads(json.dumps(stage.spec()))  # plain data: a Prefect parameter, a Ray argument
    again = build(spec)
    assert type(again) is MineStage and again.cfg == cfg and again.params == {"preset": "general_editing"}
    assert again.unit_label(3) == "mine-general_editing-batch-3"
    assert PackStage(cfg, preset="general_editing", shard_name="s").unit_label(0) == "pack-s"
    assert not again.complete() and again.report() is None
    from tasks.ingest import IngestStage

    ing = IngestStage(cfg, source="/corpus")
    assert ing.unit_outputs(3) == [f"{cfg.root}/catalog/parts/part-00003.images.parquet",
                                   f"{cfg.root}/catalog/parts/part-00003.quarantine.parquet"]
    assert not ing.unit_done(3)


def test_a_stage_must_define_every_step():
    class Half(Stage):
        name = "half"

        def plan(self) -> int:
            return 1

    with pytest.raises(TypeError, match="abstract"):
        Half(RunConfig())
