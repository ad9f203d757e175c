"""The leakage check finds a planted flipped and rescaled copy of a training image in an evaluation folder, an
exact copy stored in another format, and nothing for an evaluation photo the training set does not hold."""

import json

import pytest
from PIL import Image, ImageOps

from mining.models.embedders import OfflineEmbedder
from schemas.records import AceSample, ConditionUnit, Role
from store.leakage import check_leakage
from store.shards import write_shard_set
from tests.conftest import png

TRAIN = ("astronaut", "chelsea", "coffee", "rocket", "camera")


@pytest.fixture
def planted(demo_corpus, tmp_path):
    corpus, gt = demo_corpus
    fam = {f: [corpus / m["file"] for m in ms] for f, ms in gt["families"].items()}
    samples = [AceSample(key=f, task="general_editing", instruction="Edit {image}.",
                         units=[ConditionUnit(role=Role.EDIT, image=png(Image.open(fam[f][0])))],
                         target=ConditionUnit(role=Role.TARGET, image=png(Image.open(fam[f][2]))))
               for f in TRAIN]
    write_shard_set(samples, str(tmp_path / "set"))
    ev = tmp_path / "eval"
    ev.mkdir()
    rocket = Image.open(fam["rocket"][2]).convert("RGB")
    ImageOps.mirror(rocket).resize((rocket.width * 7 // 10, rocket.height * 7 // 10)).save(ev / "flipped.jpg", quality=90)
    Image.open(fam["camera"][0]).convert("RGB").save(ev / "exact.png")  # the same pixels, another file
    Image.open(fam["coins"][0]).convert("RGB").save(ev / "unrelated.png")
    return str(tmp_path / "set"), str(ev)


def test_a_planted_flipped_rescaled_copy_and_an_exact_copy_are_found(planted):
    train, ev = planted
    emb = OfflineEmbedder()
    rep = check_leakage(ev, [train], emb)
    assert rep.eval_images == 3 and rep.checked == {train: 10}
    by = {(r["key"], r["member"]): r for r in rep.leaked}
    flipped = by[("rocket", "target.png")]
    assert flipped["eval_image"].endswith("flipped.jpg") and flipped["level"] in ("duplicate", "near")
    assert by[("camera", "in0.png")]["level"] == "exact" and by[("camera", "in0.png")]["eval_image"].endswith("exact.png")
    strong = {r["key"] for r in rep.leaked if r["level"] in ("exact", "duplicate")}
    assert strong <= {"rocket", "camera"} and not any(r["eval_image"].endswith("unrelated.png") for r in rep.leaked)


def test_the_leakage_command_writes_the_report_and_fails_when_samples_leak(planted, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    train, ev = planted
    res = CliRunner().invoke(app, ["shards", "leakage", ev, train, "--report", str(tmp_path / "leak.json")])
    assert res.exit_code == 1, res.output
    doc = json.loads((tmp_path / "leak.json").read_text())
    assert {"rocket", "camera"} <= {r["key"] for r in doc["leaked"]} and doc["eval_images"] == 3
    clean = tmp_path / "clean"
    clean.mkdir()
    Image.open(ev + "/unrelated.png").save(clean / "only.png")
    ok = CliRunner().invoke(app, ["shards", "leakage", str(clean), train, "--report", str(tmp_path / "ok.json")])
    assert ok.exit_code == 0 and "0 samples leak" in ok.output


def test_training_refuses_or_drops_the_leaked_samples(planted, tmp_path):
    from flows.training import plan_training
    from schemas.config import RunConfig
    from store.shard_reader import read_shard_set

    train, ev = planted
    base = {"root": str(tmp_path / "root"), "models_dir": str(tmp_path / "none")}
    refuse = RunConfig(**base, train={"leakage_source": ev})
    with pytest.raises(ValueError, match=r"2 samples show images of the evaluation source .*report: "):
        plan_training(refuse, [train])
    plan = plan_training(RunConfig(**base, train={"leakage_source": ev, "leakage": "drop"}), [train])
    (kept,) = plan.shard_sets
    assert "-noleak-" in kept and sorted(s.key for s in read_shard_set(kept)) == ["astronaut", "chelsea", "coffee"]
    again = plan_training(RunConfig(**base, train={"leakage_source": ev, "leakage": "drop"}), [train])
    assert again.shard_sets == [kept] and again.identity == plan.identity  # the copy is reused
    assert plan_training(RunConfig(**base), [train]).shard_sets == [train]


def test_the_training_flow_checks_once_and_its_job_trains_on_what_the_gate_let_through(planted, tmp_path,
                                                                                       monkeypatch, prefect_results):
    import flows.pipelines as pipelines
    import store.leakage

    train, ev = planted
    checked, jobs = [], []
    real = store.leakage.check_leakage
    monkeypatch.setattr(store.leakage, "check_leakage", lambda src, sets, *a, **k: checked.append(list(sets))
                        or real(src, sets, *a, **k))

    def job(task, shard_uris, root, train_cfg, name):  # the Ray job stands aside: what it is given is the point
        jobs.append((shard_uris, train_cfg))
        return {"run_dir": str(tmp_path / "run"), "checkpoint": "", "step": 0, "metrics": [], "exports": {}}

    monkeypatch.setattr(pipelines, "call", job)
    cfg = {"models_dir": str(tmp_path / "none"), "train": {"leakage_source": ev, "leakage": "drop", "phase": 2}}
    pipelines.train_flow([train], root=str(tmp_path / "root"), config=cfg)
    assert checked == [[train]]  # one check, of the set given
    ((uris, train_cfg),) = jobs
    assert "-noleak-" in uris[0] and train_cfg["leakage_source"] is None
