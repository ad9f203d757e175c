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


def test_one_resources_class_and_model_wrappers_supply_a_workers_resources(tmp_path, monkeypatch):
    import mining.embedders
    import mining.model_base
    import schemas.resources
    import tasks.stage
    from mining.embedders import SiglipEmbedder
    from mining.inpaint import Cv2Inpainter
    from tasks.embed import EmbedStage
    from tasks.pack import PackStage

    assert tasks.stage.Resources is mining.embedders.Resources is schemas.resources.Resources
    cfg = RunConfig(root=str(tmp_path / "root"), mining={"embedder": "offline"})
    assert EmbedStage(cfg).worker_resources() == tasks.stage.Resources(cpus=0.5)  # the offline embedder's
    assert PackStage(cfg, preset="general_editing", shard_name="s").worker_resources() == PackStage.resources
    sig = SiglipEmbedder(tmp_path)
    monkeypatch.setattr(mining.model_base, "cuda_available", lambda: True)
    assert sig.resources() == tasks.stage.Resources(cpus=1.0, gpus=1.0)
    assert Cv2Inpainter().resources() == tasks.stage.Resources(cpus=0.5)  # no GPU declared: the same anywhere
    monkeypatch.setattr(mining.model_base, "cuda_available", lambda: False)
    assert sig.resources() == tasks.stage.Resources(cpus=0.5)


def test_every_model_wrapper_has_the_one_base_class():
    import importlib
    import inspect

    from mining.model_base import ModelWrapper

    wrappers = []
    for name in ("embedders", "segment", "inpaint", "ocr", "depth", "hed", "mp_models", "dlib_faces", "face",
                 "object_names", "style", "artefacts", "pair_classifier"):
        mod = importlib.import_module(f"mining.{name}")
        for cls in vars(mod).values():
            if (inspect.isclass(cls) and cls.__module__ == mod.__name__ and not getattr(cls, "_is_protocol", False)
                    and hasattr(cls, "setup")):
                wrappers.append(cls)
    assert len(wrappers) >= 18
    assert [c.__name__ for c in wrappers if not issubclass(c, ModelWrapper)] == []


def test_a_stage_run_only_computes():
    """The executor skips done units and sets workers up: no stage's run(k) loads models or reads whether
    it is done."""
    import ast
    from pathlib import Path

    bad = []
    for path in sorted((Path(__file__).resolve().parents[2] / "tasks").glob("*.py")):
        for cls in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)
                    and n.name.endswith("Stage")):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "run"):
                for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                    attr = getattr(call.func, "attr", None)
                    if attr in ("setup", "report", "unit_done", "complete"):
                        bad.append(f"{path.name}:{cls.name}.run calls {attr}()")
    assert bad == []
