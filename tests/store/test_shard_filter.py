"""`aceforge shards filter`: the expression selects rows of the samples table; the new set is a valid shard set
(verify passes, webdataset reads exactly the kept keys) with its own samples table and report."""

import numpy as np
import pytest
import pyarrow as pa

from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from store.sample_table import read_samples
from store.shard_filter import filter_shard_set
from store.shard_reader import verify_shard_set
from store.where import WhereError, select
from tests.stages.test_pack_units import Planted, plant

TABLE = pa.table({"task": ["a", "b", "a", "c"], "score": [0.1, 0.5, None, 0.9], "n": [1, 2, 3, 4]})


@pytest.mark.parametrize("expr, keys", [
    ("score > 0.3", [2, 4]),
    ("task == 'a' or n >= 4", [1, 3, 4]),
    ("not (task in ('a', \"c\")) and score <= 0.5", [2]),
    ("score is null or score < 0.2", [1, 3]),
    ("score is not null and n != 2", [1, 4]),
])
def test_where_expressions_select_the_rows_they_say(expr, keys):
    assert select(TABLE, expr).column("n").to_pylist() == keys


@pytest.mark.parametrize("expr, message", [
    ("__import__('os').system('true')", "cannot read"),
    ("__import__ > 0", "unknown column '__import__'"),
    ("score >", "ends too early"),
    ("score > 1 2", "unexpected"),
    ("score ; 1", "cannot read"),
    ("task > 1", "cannot evaluate"),
])
def test_where_refuses_anything_else_in_one_line(expr, message):
    with pytest.raises(WhereError, match=message):
        select(TABLE, expr)


def test_filter_writes_a_valid_set_of_the_kept_samples(tmp_path):
    import webdataset as wds

    cfg = RunConfig(root=str(tmp_path / "root"), shards={"maxcount": 2}, supervision={"enabled": False},
                    models_dir=str(tmp_path / "none"))
    src = LocalExecutor().run(Planted(cfg, dirs=[plant(tmp_path, "a", 5), plant(tmp_path, "b", 3)])).outputs[0]
    table = read_samples(src)
    cut = float(np.median(table.column("ssim_change").to_numpy()))
    want = [r["key"] for r in table.to_pylist() if r["ssim_change"] > cut or r["key"] == "b-2"]
    out = str(tmp_path / "filtered")
    rep = filter_shard_set(src, out, f"ssim_change > {cut!r} or key == 'b-2'")
    assert rep.kept == len(want) and 0 < rep.kept < 8 and rep.total == 8
    assert verify_shard_set(out).ok
    tars = sorted(str(p) for p in (tmp_path / "filtered").glob("*.tar"))
    assert [s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False)] == want
    new = read_samples(out).to_pylist()
    assert [r["key"] for r in new] == want and all(r["shard"].startswith("shard-0000") for r in new)
    assert all((tmp_path / "filtered" / r["thumb"]).is_file() for r in new if r["thumb"])
    assert f"by <code>ssim_change &gt; {cut!r} or key == &#x27;b-2&#x27;</code>: kept {rep.kept} of 8" in \
        (tmp_path / "filtered" / "report.html").read_text()
    with pytest.raises(FileExistsError):
        filter_shard_set(src, out, "n > 0")


def test_the_filter_command_writes_the_set_and_ends_a_bad_expression_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    cfg = RunConfig(root=str(tmp_path / "root"), supervision={"enabled": False}, models_dir=str(tmp_path / "none"))
    src = LocalExecutor().run(Planted(cfg, dirs=[plant(tmp_path, "a", 3)])).outputs[0]
    runner = CliRunner()
    ok = runner.invoke(app, ["shards", "filter", src, str(tmp_path / "o"), "--where", "key != 'a-1'"])
    assert ok.exit_code == 0 and "2/3 samples" in ok.output
    bad = runner.invoke(app, ["shards", "filter", src, str(tmp_path / "o2"), "--where", "changed_in_mask >"])
    lines = bad.output.strip().splitlines()
    assert bad.exit_code == 1 and len(lines) == 1 and lines[0].startswith("filter failed:")
    assert not (tmp_path / "o2").exists()
    rep = runner.invoke(app, ["shards", "report", str(tmp_path / "o")])
    assert rep.exit_code == 0 and (tmp_path / "o" / "report.html").is_file()
