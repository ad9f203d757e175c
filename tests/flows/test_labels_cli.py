"""`aceforge label` (Label Studio both ways), `aceforge train-pair-classifier --task`, and a preset that needs a
classifier refusing before the mining flow starts."""
import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.labels import read_labels
from tests.conftest import copy_embedded

runner = CliRunner()


@pytest.mark.slow
def test_label_studio_round_trip_then_training_from_the_roots_labels(embedded, demo_corpus, tmp_path):
    from stages.corpus.ingest import load_catalog
    from tests.flows.test_classifier import _mine

    _, gt = demo_corpus
    root = copy_embedded(embedded, str(tmp_path / "root"))
    models = tmp_path / "models"
    models.mkdir()
    env = {"ACEFORGE_MODELS": str(models)}
    _, _, pairs = _mine(root, str(models))
    ls = tmp_path / "tasks.json"
    res = runner.invoke(app, ["label", "general_editing", "--task", "general_editing", "--root", root,
                              "--export-label-studio", str(ls)], env=env)
    assert res.exit_code == 0, res.output
    assert f"wrote {len(pairs)} Label Studio tasks" in res.output
    family = {m["file"]: f for f, ms in gt["families"].items() for m in ms}
    of = {r.id: family.get(r.uri.split("/corpus/", 1)[1]) for r in load_catalog(root)}
    tasks = json.loads(ls.read_text())
    for t in tasks:  # what a team labelling in Label Studio sends back
        d = t["data"]
        verdict = "accept" if of[d["source_id"]] and of[d["source_id"]] == of[d["target_id"]] else "reject"
        t["annotations"] = [{"completed_by": {"email": "team@example.org"}, "created_at": "2030-01-01T00:00:00Z",
                             "result": [{"type": "choices", "from_name": "verdict", "to_name": "target",
                                         "value": {"choices": [verdict]}}]}]
    ls.write_text(json.dumps(tasks))
    res = runner.invoke(app, ["label", "general_editing", "--task", "general_editing", "--root", root,
                              "--import-label-studio", str(ls)], env=env)
    assert res.exit_code == 0, res.output
    assert f"imported {len(pairs)} verdicts" in res.output
    assert read_labels(root, "general_editing").num_rows == len(pairs)
    res = runner.invoke(app, ["train-pair-classifier", "--task", "general_editing", "--root", root, "--epochs", "100"],
                        env=env)
    assert res.exit_code == 0, res.output
    assert "held out" in res.output and "ROC AUC" in res.output
    assert (models / "pair_classifier" / "general_editing.safetensors").is_file()
    res = runner.invoke(app, ["train-pair-classifier", "--task", "text_editing", "--root", root], env=env)
    assert res.exit_code == 1 and "no text_editing labels under" in res.output
    # with the general-editing head present, a preset needing another task's head still refuses, in one line
    cfg = tmp_path / "run.yaml"
    cfg.write_text("mining:\n  presets: [object_editing]\n")
    res = runner.invoke(app, ["mine", "--root", root, "-c", str(cfg)], env=env)
    assert res.exit_code == 1
    assert "preset object_editing needs a trained object_editing pair classifier" in res.output
    assert len(res.output.strip().splitlines()) == 1
