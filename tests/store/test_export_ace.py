import io
import os

import numpy as np
import pytest
from PIL import Image

from schemas.config import ShardConfig
from store.export_ace import SEP, export_ace_plus
from store.shards import write_shard_set
from tests.conftest import make_sample


def test_export_writes_the_official_list_with_images_beside_it(samples, tmp_path):
    rng = np.random.default_rng(9)
    two_refs = make_sample(99, rng, task="reference_generation")
    extra = two_refs.units[1].model_copy()
    two_refs = two_refs.model_copy(update={"units": [*two_refs.units, extra]})
    uri = str(tmp_path / "set")
    write_shard_set([*samples, two_refs], uri, ShardConfig(maxcount=4))
    rep = export_ace_plus(uri, tmp_path / "ace")
    lines = (tmp_path / "ace" / "train.csv").read_text().splitlines()
    assert len(lines) == 10 == rep.written  # no header row
    assert rep.skipped == {"more_than_one_reference": 1}
    by_key = {s.key: s for s in samples}
    for line in lines:
        edit, mask, ref, target, prompt, data_type = line.split(SEP)
        key = target.split("/")[-2]
        s = by_key[key]
        assert prompt == s.instruction and data_type == s.task
        assert os.path.isabs(target) and target.startswith(str((tmp_path / "ace").resolve()))
        assert open(target, "rb").read() == s.target.image
        assert open(edit, "rb").read() == s.units[0].image
        assert bool(ref) == (s.task == "reference_generation")
        m = np.asarray(Image.open(mask))
        assert m.shape == (40, 48)
        if s.units[0].mask is None:
            assert (m == 255).all()
        else:
            assert (m == np.asarray(Image.open(io.BytesIO(s.units[0].mask)))).all()


# The released trainer's list reader, restated (not imported: it needs scepter): ACE_plus
# modules/ace_plus_dataset.py, ACEPlusDataset.read_data_list (rows = text.strip().split("\n"), fields zipped with
# row.split(DELIMITER)) and load_image -> scepter modules/utils/directory.py osp_path(prefix, path): the path
# itself when it starts with prefix, else os.path.join(prefix, path); a local path then opens against the working
# directory. train_config/ace_plus_lora.yaml: DELIMITER "#;#", these FIELDS, PATH_PREFIX "".
RELEASED_FIELDS = ["edit_image", "edit_mask", "ref_image", "target_image", "prompt", "data_type"]


def _released_items(list_path, prefix=""):
    rows = list_path.read_bytes().decode("utf-8").strip().split("\n")
    items = []
    for row in rows:
        item = {"prefix": prefix}
        for key, val in zip(RELEASED_FIELDS, row.split("#;#")):
            item[key] = val
        items.append(item)
    return items


def _osp_path(prefix, data_file):
    return data_file if data_file.startswith(prefix) else os.path.join(prefix, data_file)


def _check_released_reads(items, n):
    assert len(items) == n
    for item in items:
        assert len(item) == 7 and item["target_image"] and item["edit_image"] and item["edit_mask"]
        for field in ("edit_image", "edit_mask", "ref_image", "target_image"):
            if item[field]:  # the released loader opens every non-empty path under the prefix
                with Image.open(_osp_path(item["prefix"], item[field])) as im:
                    im.verify()


def test_every_row_loads_with_the_released_config_as_shipped(samples, tmp_path, monkeypatch):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    rep = export_ace_plus(uri, tmp_path / "ace")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the trainer runs from its own checkout, not from the export folder
    items = _released_items(tmp_path / "ace" / "train.csv", prefix="")
    assert {i["data_type"] for i in items} <= {s.task for s in samples}
    _check_released_reads(items, len(samples))
    assert rep.path_prefix == ""


def test_relative_paths_load_with_the_reported_path_prefix(samples, tmp_path, monkeypatch):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    rep = export_ace_plus(uri, tmp_path / "ace", relative=True)
    rows = (tmp_path / "ace" / "train.csv").read_text().splitlines()
    assert all(r.split(SEP)[3].startswith("images/") for r in rows)
    assert rep.path_prefix == str((tmp_path / "ace").resolve())
    monkeypatch.chdir(tmp_path)
    _check_released_reads(_released_items(tmp_path / "ace" / "train.csv", prefix=rep.path_prefix), len(samples))
    with pytest.raises(FileNotFoundError):  # as shipped (PATH_PREFIX "") relative rows do not resolve
        _check_released_reads(_released_items(tmp_path / "ace" / "train.csv", prefix=""), len(samples))


def test_an_out_folder_whose_path_holds_the_separator_is_refused(samples, tmp_path):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    with pytest.raises(ValueError, match="#;#"):
        export_ace_plus(uri, tmp_path / "a#;#b")
    assert not (tmp_path / "a#;#b").exists()
    export_ace_plus(uri, tmp_path / "a#;#b", relative=True)  # relative rows never hold the folder


def test_the_command_says_which_path_prefix_to_use(samples, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    runner = CliRunner()
    res = runner.invoke(app, ["shards", "export-ace", uri, str(tmp_path / "abs")])
    assert res.exit_code == 0, res.output
    assert 'PATH_PREFIX: "" reads them as shipped' in res.output
    res = runner.invoke(app, ["shards", "export-ace", uri, str(tmp_path / "rel"), "--relative"])
    assert res.exit_code == 0, res.output
    assert f'PATH_PREFIX: "{(tmp_path / "rel").resolve()}"' in res.output.replace("\n", "")
