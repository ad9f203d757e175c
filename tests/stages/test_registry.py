"""The stage registry: what each stage declares, and a new stage added by one class and one entry."""
import json

import numpy as np
import pytest

from schemas.config import FACE_TASKS, SYNTH_TASKS, RunConfig
from schemas.taxonomy import TASKS
from stages import registry
from store import storage
from runtime.executors import LocalExecutor
from store.shard_reader import read_shard_set
from runtime.stage import ItemReport, Resources, SingleItemStage, StageReport
from stages.synthesis.parts import png, record_samples, unpng, write_records


def test_every_synthesis_task_has_exactly_one_registered_producer():
    for task in SYNTH_TASKS + FACE_TASKS:
        makers = [c.name for c in registry.STAGES if task in c.produces]
        assert len(makers) == 1, (task, makers)


def test_declarations_name_known_tasks_stages_sets_and_config_sections():
    names = [c.name for c in registry.STAGES]
    assert len(names) == len(set(names))
    cfg = RunConfig()
    sets = {c.packs for c in registry.STAGES if c.packs}
    for i, c in enumerate(registry.STAGES):
        assert set(c.produces) <= set(TASKS), c.name
        assert all(n in names[:i] for n in c.needs), (c.name, c.needs)  # needs run before it
        assert c.key and c.scope in ("run", "preset", "synthesis"), c.name
        assert c.ui_report is None or c.ui_report in _reports(), c.name
        assert registry.config_section(cfg, c) is not None, c.name
        if c.shard_set is not None:
            assert c.shard_set in sets and c.produces, c.name
            pack = next(p for p in registry.STAGES if p.packs == c.shard_set)
            assert names.index(pack.name) > i, c.name  # packed after it ran
    # the sample order of the shard sets: producers in registry order
    assert [c.name for c in registry.producers("synthesis")] == [
        "synth-objects", "synth-repaint", "synth-face-pairs", "synth-text", "synth-maps", "synth-captions"]
    assert [c.name for c in registry.producers("chains")] == ["synth-style", "synth-long-context", "synth-multi-turn"]


def _reports():
    from flows.reports import REPORTS

    return REPORTS


def _names(cfg):
    return [c.name for c in registry.enabled(cfg)]


def test_a_stage_runs_when_a_task_it_produces_is_configured_or_an_enabled_stage_needs_it():
    mining = ["ingest", "embed", "kmeans-fit", "kmeans-assign", "kmeans", "mine", "instructions", "pack"]
    assert _names(RunConfig()) == mining
    # long_context needs the object removals (and they the segmenter); nothing goes into the synthesis set
    assert _names(RunConfig(synthesis={"tasks": ["long_context"]})) == mining + [
        "synth-segment", "synth-objects", "synth-long-context", "pack-chains"]
    assert _names(RunConfig(synthesis={"tasks": ["facial_editing", "inpainting"]})) == mining + [
        "synth-repaint", "synth-faces", "synth-face-buckets", "synth-face-pairs", "pack-synthesis"]
    cfg = RunConfig(synthesis={"tasks": ["long_context", "object_addition"]})
    pipe = registry.Pipeline(cfg, shard_prefix="p")
    assert [(k, s.label) for (_, k), s in pipe.synthesis()] == [
        ("segment", "synth-segment"), ("objects", "synth-objects"), ("shards", "pack-p-synthesis"),
        ("long_context", "synth-long-context"), ("chain_shards", "pack-p-synthesis-chains")]


def test_a_group_preset_packs_its_sets_and_no_writer_leaves_pairs_unpacked(capsys):
    cfg = RunConfig(mining={"presets": ["general_editing", "series_generation"]})
    steps = [(p, s.label) for p, s in registry.Pipeline(cfg, source="src", writer=None).mining()]
    assert steps == [(("ingest",), "ingest"), (("embeddings",), "embed"),
                     (("kmeans_fit",), "kmeans-fit"), (("kmeans_assign",), "kmeans-assign"), (("clusters",), "kmeans"),
                     (("general_editing", "mined"), "mine-general_editing"),
                     (("series_generation", "mined"), "mine-series_generation"),
                     (("series_generation", "shards"), "pack-mined-series_generation")]
    assert "general_editing: mining.instructions.backend is none" in capsys.readouterr().out


# --- a new stage: this class and one `register` call -------------------------------------------------------

class FlipStage(SingleItemStage):
    """A toy producer: each catalog-free item writes two records whose target is the edit image mirrored."""

    name = "toy-flip"
    resources = Resources(cpus=0.5)
    produces, shard_set = ("general_editing",), "synthesis"
    key, config_section, ui_report = "flip", "synthesis", "counts"

    @property
    def out(self) -> str:
        return self.layout.synth("flip")

    def run(self, k: int) -> ItemReport:
        rng = np.random.default_rng(0)
        rows = []
        for i in range(2):
            a = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
            rows.append({"sample_id": f"flip{i}", "kind": "flip", "source_id": f"src{i}", "edit_png": png(a),
                         "target_png": png(a[:, ::-1].copy()), "mask_png": None, "object_png": None,
                         "instructions": json.dumps({"general_editing": "mirror the picture"}),
                         "generators": json.dumps([["toy-flip", "1"]]), "scores": "{}", "labels": None})
        counts = {"samples": {"general_editing": len(rows)}}
        write_records(storage.join(self.out, "part-00000"), rows, counts)
        storage.write_marker(self.out, {"counts": counts, "parts": ["part-00000"], "units": 1})
        self.stamp(self.out)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        return None if m is None else StageReport(stage=self.label, items=1, outputs=[self.out], counts=m["counts"])

    def samples(self, rec: dict, tasks: list[str]):
        return record_samples(rec, tasks)

    @classmethod
    def summary(cls, counts: dict, group: dict, name: str) -> str:
        return f"synthesis: flipped {counts['samples']['general_editing']}"


@pytest.fixture
def flip():
    registry.register(FlipStage, before="pack-synthesis")
    yield FlipStage
    registry.unregister(FlipStage)


def test_registering_needs_and_packs_in_order():
    with pytest.raises(ValueError, match="register it before"):
        registry.register(FlipStage)  # after its pack stage: never packed
    with pytest.raises(ValueError, match="already"):
        registry.register(registry.stage("synth-maps"))
    assert FlipStage not in registry.STAGES


def test_a_new_stage_runs_through_the_pipeline_and_its_samples_are_packed(flip, tmp_path):
    from flows.reports import summary_lines

    cfg = RunConfig(root=str(tmp_path / "root"), supervision={"enabled": False})
    # a task no built-in stage makes: a real stage adds it to the tasks SynthesisConfig accepts
    cfg = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(update={"tasks": ["general_editing"]})})
    assert _names(cfg)[-2:] == ["toy-flip", "pack-synthesis"]
    ex, ran = LocalExecutor(), {}
    for (_, key), st in registry.Pipeline(cfg, shard_prefix="t").synthesis():
        ran[key] = st.summary_entry(ex.run(st).counts, True)
    assert list(ran) == ["flip", "shards"]
    shards = ran["shards"]
    assert shards["counts_by_task"] == {"general_editing": 2} and shards["landed_now"]
    got = sorted(read_shard_set(shards["uri"]), key=lambda s: s.key)
    assert [s.key for s in got] == ["general_editing-flip0", "general_editing-flip1"]
    for s in got:
        assert np.array_equal(unpng(s.target.image), unpng(s.units[0].image)[:, ::-1])
        assert [g.name for g in s.lineage.generators] == ["toy-flip"]
    assert "synthesis: flipped 2" in summary_lines({"root": cfg.root, "synthesis": ran})
    text = registry.Pipeline(cfg, shard_prefix="t").describe()
    assert "toy-flip  [toy-flip]" in text and "pack-t-synthesis  [pack-synthesis]" in text
    assert "items:     1 (complete)" in text


def test_no_flow_or_packer_dispatches_on_stage_classes():
    """Which stages exist is said once, in the registry: no isinstance over a stage class in flows/ or the packers."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    files = [*(repo / "flows").rglob("*.py"), *(repo / "stages").rglob("*pack*.py")]
    assert len(files) > 20
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = [n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)]
                bad += [f"{f.relative_to(repo)}:{node.lineno} {n}" for n in names if n.endswith("Stage")]
    assert bad == []
