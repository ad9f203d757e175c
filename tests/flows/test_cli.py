import shutil

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


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


def test_missing_source_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--root", str(tmp_path / "r")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_demo_end_to_end_then_verify_and_export(tmp_path):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    shard_uri = str(tmp_path / "out" / "root" / "shards" / "demo-general_editing")
    assert "reconciled" in res.output and "shard set:" in res.output
    n = int(res.output.split("shard set:")[1].split("shards, ")[1].split(" samples")[0])
    assert n > 0
    ver = runner.invoke(app, ["shards", "verify", shard_uri])
    assert ver.exit_code == 0 and f"{n}/{n} samples intact" in ver.output
    exp = runner.invoke(app, ["shards", "export-ace", shard_uri, str(tmp_path / "ace")])
    assert exp.exit_code == 0 and f"{n} samples" in exp.output
    first = sorted((tmp_path / "out" / "root" / "shards" / "demo-general_editing").glob("*.tar"))[0]
    first.write_bytes(first.read_bytes()[:5000])
    bad = runner.invoke(app, ["shards", "verify", shard_uri])
    assert bad.exit_code == 1 and "bad shard" in bad.output
    shutil.rmtree(tmp_path / "out")
