import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def run_cli(args: list[str], env: dict | None = None, timeout: float = 600) -> SimpleNamespace:
    """The real command in a subprocess, talking to the session's Prefect server (flows log to the console,
    which an in-process runner would close under them)."""
    from prefect.settings import PREFECT_API_URL

    full_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=full_env,
                       timeout=timeout)
    return SimpleNamespace(exit_code=p.returncode, output=p.stdout + p.stderr)


def test_ingest_lists_every_bad_file_with_its_reason(demo_corpus, tmp_path):
    corpus, gt = demo_corpus
    res = runner.invoke(app, ["ingest", str(corpus), "--root", str(tmp_path / "root"), "--workers", "2"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    bad = {k: v for k, v in gt["expected"].items() if v["outcome"] == "quarantined"}
    for rel, want in bad.items():
        line = next((ln for ln in res.output.splitlines() if rel.split("/")[-1] in ln), "")
        assert want["reason"] in line, (rel, line)
    n_ok = sum(v["outcome"] == "accepted" for v in gt["expected"].values())
    assert f"accepted {n_ok} + duplicates 1 + quarantined {len(bad)}: reconciled" in text


def test_config_errors_exit_2_and_name_the_key(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("shards:\n  max_count: 3\n")
    res = runner.invoke(app, ["ingest", str(tmp_path), "--config", str(cfg)])
    assert res.exit_code == 2 and "shards.max_count" in res.output and "maxcount" in res.output


@pytest.mark.parametrize("text, says", [
    ("mining:\n  band_lo: 0.9\n  band_hi: 0.5\n", "band_lo 0.9 is above band_hi 0.5"),
    ("mining:\n  presets: [general_edting]\n", "unknown preset 'general_edting' in mining.presets; known:"),
    ("mining:\n  presets: [facial_misaligned]\n", "defined on face features, which the mining flow does not"),
    ("train:\n  task_weights: {inpaint: 2}\n", "unknown task 'inpaint'; known tasks:"),
    ("root: gcs-nope://bucket/root\n", "no filesystem for gcs-nope://"),
    ("mining:\n  k: [3\n", "is not valid YAML at line"),
])
def test_bad_configs_fail_before_any_work_in_one_line(tmp_path, text, says):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    root = [] if text.startswith("root:") else ["--root", str(tmp_path / "r")]  # --root would override it
    res = runner.invoke(app, ["mine", str(tmp_path / "src"), "--config", str(cfg), *root])
    assert res.exit_code == 2 and says in res.output.strip().splitlines()[-1], res.output
    assert not (tmp_path / "r").exists()  # nothing ran
    assert "Traceback" not in res.output


def test_missing_source_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--root", str(tmp_path / "r")])
    assert res.exit_code == 1 and "does not exist" in res.output.strip().splitlines()[-1]
    assert "Traceback" not in res.output
    debug = runner.invoke(app, ["--debug", "ingest", str(tmp_path / "nope"), "--root", str(tmp_path / "r")])
    assert debug.exit_code == 1 and "Traceback" in debug.output and "expand_source" in debug.output
    assert debug.output.strip().splitlines()[-1].startswith("ingest failed:")


def test_mine_prints_the_ingest_reconciliation_line(tmp_path, monkeypatch):
    """`aceforge mine` printed the mining summary only: the ingest counts were left to catalog/_SUCCESS.json."""
    import flows.pipelines
    from store import storage

    counts = {"seen": 9, "accepted": 5, "duplicates": 1, "quarantined": {"corrupt": 2, "undecodable_name": 1},
              "catalog_uri": str(tmp_path / "r" / "catalog"), "skipped": {}}
    monkeypatch.setattr(flows.pipelines, "mine_flow", lambda **kw: {"root": kw["root"], "ingest": counts})
    res = runner.invoke(app, ["mine", str(tmp_path / "src"), "--root", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "seen 9 = accepted 5 + duplicates 1 + quarantined 3: reconciled" in " ".join(res.output.split())
    # mining a catalog ingested earlier: its counts, from the catalog's marker
    storage.write_marker(str(tmp_path / "r" / "catalog"), {"counts": {**counts, "seen": 8}})
    monkeypatch.setattr(flows.pipelines, "mine_flow", lambda **kw: {"root": kw["root"]})
    res = runner.invoke(app, ["mine", "--root", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "seen 8 = accepted 5 + duplicates 1 + quarantined 3: DO NOT RECONCILE" in " ".join(res.output.split())


def test_demo_end_to_end_then_verify_export_and_a_second_demo_rewrites_nothing(tmp_path, prefect_results):
    res = run_cli(["demo", "--out", str(tmp_path / "out"), "--no-train"])
    assert res.exit_code == 0, res.output
    shard_uri = str(tmp_path / "out" / "root" / "shards" / "demo-general_editing")
    assert "reconciled" in res.output and "shard set:" in res.output
    n = int(res.output.split("shard set:")[1].split("shards, ")[1].split(" samples")[0])
    assert n > 0
    ver = runner.invoke(app, ["shards", "verify", shard_uri])
    assert ver.exit_code == 0 and f"{n}/{n} samples intact" in ver.output
    exp = runner.invoke(app, ["shards", "export-ace", shard_uri, str(tmp_path / "ace")])
    assert exp.exit_code == 0 and f"{n} samples" in exp.output
    # a second demo on the same folder rewrites nothing and adds nothing
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_cli(["demo", "--out", str(out), "--no-train"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # no file rewritten
    assert set(p for p in out.rglob("*") if p.is_file()) == set(before)  # and none added
    first = sorted((tmp_path / "out" / "root" / "shards" / "demo-general_editing").glob("*.tar"))[0]
    first.write_bytes(first.read_bytes()[:5000])
    bad = runner.invoke(app, ["shards", "verify", shard_uri])
    assert bad.exit_code == 1 and f"bad {first}" in bad.output and "does not match the manifest" in bad.output
    exp = runner.invoke(app, ["shards", "export-ace", shard_uri, str(tmp_path / "ace2")])
    assert exp.exit_code == 1 and exp.output.strip().splitlines()[-1].startswith("export failed:")
    assert not list((tmp_path / "ace2").glob("*.tmp")) and not (tmp_path / "ace2" / "train.csv").exists()
    shutil.rmtree(tmp_path / "out")


def test_verify_decodes_every_image_a_checksum_cannot_vouch_for(tmp_path):
    """An image broken before the shard was written has a matching checksum: only decoding finds it."""
    import numpy as np

    from schemas.config import ShardConfig
    from store.shards import write_shard_set
    from tests.conftest import make_sample

    rng = np.random.default_rng(0)
    samples = [make_sample(i, rng) for i in range(4)]
    broken = samples[2].target.model_copy(update={"image": samples[2].target.image[:40]})
    samples[2] = samples[2].model_copy(update={"target": broken})
    write_shard_set(samples, str(tmp_path / "set"), ShardConfig(maxcount=2))
    res = runner.invoke(app, ["shards", "verify", str(tmp_path / "set")])
    assert res.exit_code == 1 and "3/4 samples intact" in res.output
    assert f"sample '{samples[2].key}'" in res.output and "target image does not decode" in res.output


def test_models_lists_expected_files_and_presence(tmp_path):
    res = runner.invoke(app, ["models"], env={"ACEFORGE_MODELS": str(tmp_path)})
    assert res.exit_code == 0, res.output
    assert "open_clip_model.safetensors" in res.output and "arcface.pt" in res.output
    assert "offline-dct-hist" in res.output and "pass-through" in res.output
    assert "sam_vit_b_01ec64.pth" in res.output and "big-lama.pt" in res.output and "cv2-inpaint-telea" in res.output
    for name in ("selfie_segmentation.tflite", "pose_landmark_full.tflite", "vgg16.safetensors", "ControlNetHED.pth",
                 "model.safetensors"):
        assert name in res.output, name
    # SigLIP, ArcFace, SAM, LaMa, the detector, MediaPipe x2, VGG16, depth, HED, the pair classifier: none in an
    # empty folder
    assert "owlv2-base-patch16-ensemble" in res.output
    assert res.output.count(": absent") == 11 and ": present" not in res.output


def test_mine_then_train_classifier_from_labels(demo_corpus, tmp_path, prefect_results):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.corpus.ingest import load_catalog

    corpus, gt = demo_corpus
    root = str(tmp_path / "root")
    assert runner.invoke(app, ["ingest", str(corpus / "photos"), "--root", root]).exit_code == 0
    (tmp_path / "models").mkdir()  # empty: every model takes its offline fallback (an absent one is an error)
    res = run_cli(["mine", "--root", root], env={"ACEFORGE_MODELS": str(tmp_path / "models")})
    assert res.exit_code == 0, res.output
    assert "preset general_editing" in res.output and "shard set:" in res.output  # template instructions by default
    from store import storage

    assert storage.read_marker(f"{root}/pairs/general_editing/instructed")["writer"] == "template:1"
    ids = {r.uri.split("/photos/")[1]: r.id for r in load_catalog(root)}
    fams = [[ids[m["file"].split("photos/")[1]] for m in ms if m["file"].split("photos/")[1] in ids]
            for ms in gt["families"].values()]
    pos = [(f[0], v, 1) for f in fams for v in f[1:]]
    neg = [(fams[k][0], fams[k + 1][0], 0) for k in range(len(fams) - 1)]
    rows = pos + neg
    pq.write_table(pa.table({"source_id": [r[0] for r in rows], "target_id": [r[1] for r in rows],
                             "label": [r[2] for r in rows]}), tmp_path / "labels.parquet")
    out = tmp_path / "models" / "pair_classifier" / "general.safetensors"
    res = runner.invoke(app, ["train-pair-classifier", str(tmp_path / "labels.parquet"), "--out", str(out),
                              "--root", root, "--epochs", "100"], env={"ACEFORGE_MODELS": str(tmp_path / "models")})
    assert res.exit_code == 0, res.output
    assert out.is_file() and f"trained on {len(rows)} pairs ({len(pos)} positive) from offline-dct-hist" in res.output
    pq.write_table(pa.table({"source_id": ["nope"], "target_id": ["nope"], "label": [1]}), tmp_path / "bad.parquet")
    res = runner.invoke(app, ["train-pair-classifier", str(tmp_path / "bad.parquet"), "--out", str(out),
                              "--root", root], env={"ACEFORGE_MODELS": str(tmp_path / "models")})
    assert res.exit_code == 1 and "no embedding" in res.output


def test_train_refuses_a_bad_init_from_in_one_line_before_anything_starts(tmp_path):
    import json

    ck = tmp_path / "stage1" / "checkpoint_2025-01-01_00-00-00.000000"
    ck.mkdir(parents=True)
    (ck / "trainable.safetensors").write_bytes(b"")
    (ck / "state.json").write_text(json.dumps({"step": 5, "examples_seen": 5, "mode": "lora", "lora_fused": True,
                                               "lora_rank": 16}))
    cases = [(str(tmp_path / "nowhere"), [], "does not exist"),
             (str(tmp_path), [], "is neither a checkpoint folder (state.json) nor a run folder"),
             (str(tmp_path / "stage1"), [], "has lora_rank=16, the config asks for 64"),
             (str(ck), ["-c", str(tmp_path / "full.yaml")], "is lora training, the config asks for full")]
    (tmp_path / "full.yaml").write_text("train:\n  mode: full\n")
    for uri, extra, says in cases:
        res = runner.invoke(app, ["train", str(tmp_path / "set-a"), str(tmp_path / "set-b"), "--phase", "2",
                                  "--init-from", uri, "--root", str(tmp_path / "r"), *extra])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("training failed: init_from ")
        assert says in lines[0], res.output
    assert not (tmp_path / "r").exists()


def _described(res) -> list[str]:
    """The stage kinds `aceforge describe` printed a block for (`<label>  [<kind>]` lines)."""
    return [line.rsplit("[", 1)[1].rstrip("]") for line in res.output.splitlines() if line.endswith("]")]


def test_describe_prints_every_stage_the_example_config_enables():
    from schemas.config import load_config
    from stages.registry import enabled

    res = runner.invoke(app, ["describe", "-c", "configs/example.yaml", "--source", "corpus/"])
    assert res.exit_code == 0, res.output
    want = [c.name for c in enabled(load_config("configs/example.yaml"))]
    assert want[:5] == ["ingest", "embed", "kmeans-fit", "kmeans-assign", "kmeans"] and set(_described(res)) == set(want)
    assert "items:     planned at run time" in res.output  # nothing ingested yet


def test_describe_prints_every_stage_of_the_demo_with_its_tasks(tmp_path):
    import yaml

    from flows.demo import demo_config
    from schemas.config import FACE_TASKS, SYNTH_TASKS
    from stages.registry import STAGES

    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(demo_config(tmp_path / "out", None)))
    res = runner.invoke(app, ["describe", "-c", str(path)])
    assert res.exit_code == 0, res.output
    kinds = _described(res)
    # the demo enables every stage (no source given) but captions, which need a captioning model
    assert set(kinds) == {c.name for c in STAGES} - {"ingest", "synth-captions"}
    assert kinds.count("mine") == 2 and kinds.count("instructions") == 1  # series_generation packs its groups
    packed = {t for line in res.output.splitlines() if line.startswith("  tasks:")
              for t in line.split(":", 1)[1].strip().split(", ")}
    assert set(SYNTH_TASKS + FACE_TASKS) <= packed
    path.write_text(yaml.safe_dump(demo_config(tmp_path / "out", {"mining": {"instructions": {
        "backend": "chat", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}})))
    res = runner.invoke(app, ["describe", "-c", str(path)])
    assert res.exit_code == 0, res.output
    assert "synth-captions" in _described(res)  # a captioning endpoint: text_to_image too
