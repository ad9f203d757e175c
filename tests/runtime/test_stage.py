import json

import pytest

from schemas.config import RunConfig
from stages.pairs.mine import MineStage
from stages.pairs.pack import PackStage
from runtime.stage import Stage, build


def test_a_stage_travels_as_its_spec_and_names_its_items(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"), mining={"k": 7})
    stage = MineStage(cfg, preset="general_editing")
    spec = json.loads(json.dumps(stage.spec()))  # plain data: a Prefect parameter, a Ray argument
    again = build(spec)
    assert type(again) is MineStage and again.cfg == cfg and again.params == {"preset": "general_editing"}
    assert again.item_label(3) == "mine-general_editing-batch-3"
    assert PackStage(cfg, preset="general_editing", shard_name="s").item_label(0) == "pack-s-unit-0"
    assert not again.complete() and again.report() is None
    from stages.corpus.ingest import IngestStage

    ing = IngestStage(cfg, source="/corpus")
    assert ing.item_outputs(3) == [f"{cfg.root}/catalog/parts/part-00003.images.parquet",
                                   f"{cfg.root}/catalog/parts/part-00003.quarantine.parquet",
                                   f"{cfg.root}/catalog/parts/part-00003.hashes.parquet"]
    assert not ing.item_done(3)


def test_a_stage_must_define_every_step():
    class Half(Stage):
        name = "half"

        def plan(self) -> int:
            return 1

    with pytest.raises(TypeError, match="abstract"):
        Half(RunConfig())


def test_one_resources_class_and_model_wrappers_supply_a_workers_resources(tmp_path, monkeypatch):
    import mining.models.embedders
    import mining.models.base
    import schemas.resources
    import runtime.stage
    from mining.models.embedders import SiglipEmbedder
    from mining.objects.inpaint import Cv2Inpainter
    from stages.corpus.embed import EmbedStage
    from stages.pairs.pack import PackStage

    assert runtime.stage.Resources is mining.models.embedders.Resources is schemas.resources.Resources
    cfg = RunConfig(root=str(tmp_path / "root"), mining={"embedder": "offline"})
    assert EmbedStage(cfg).worker_resources() == runtime.stage.Resources(cpus=0.5)  # the offline embedder's
    assert PackStage(cfg, preset="general_editing", shard_name="s").worker_resources() == PackStage.resources
    sig = SiglipEmbedder(tmp_path)
    monkeypatch.setattr(mining.models.base, "cuda_available", lambda: True)
    assert sig.resources() == runtime.stage.Resources(cpus=1.0, gpus=1.0)
    assert Cv2Inpainter().resources() == runtime.stage.Resources(cpus=0.5)  # no GPU declared: the same anywhere
    monkeypatch.setattr(mining.models.base, "cuda_available", lambda: False)
    assert sig.resources() == runtime.stage.Resources(cpus=0.5)


def test_every_model_wrapper_has_the_one_base_class():
    import importlib
    import inspect

    from mining.models.base import ModelWrapper

    import pkgutil

    import mining

    wrappers = []
    for info in pkgutil.walk_packages(mining.__path__, "mining."):
        mod = importlib.import_module(info.name)
        for cls in vars(mod).values():
            if (inspect.isclass(cls) and cls.__module__ == mod.__name__ and not getattr(cls, "_is_protocol", False)
                    and hasattr(cls, "setup")):
                wrappers.append(cls)
    assert len(wrappers) >= 18
    assert [c.__name__ for c in wrappers if not issubclass(c, ModelWrapper)] == []


def test_a_stage_run_only_computes():
    """The executor skips done items and sets workers up: no stage's run(k) loads models or reads whether
    it is done."""
    import ast
    from pathlib import Path

    bad = []
    paths = sorted((Path(__file__).resolve().parents[2] / "stages").rglob("*.py"))
    assert len(paths) > 20
    for path in paths:
        for cls in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)
                    and n.name.endswith("Stage")):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "run"):
                for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                    attr = getattr(call.func, "attr", None)
                    if attr in ("setup", "report", "item_done", "complete"):
                        bad.append(f"{path.name}:{cls.name}.run calls {attr}()")
    assert bad == []
