import pytest

from schemas.config import ConfigError, IngestConfig, RunConfig, config_hash, load_config


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig) and cfg.ingest.min_side == 64 and cfg.shards.maxcount == 1000


def test_yaml_values_and_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("root: s3://bucket/x\ningest:\n  min_side: 128\nshards:\n  maxcount: 50\n")
    cfg = load_config(p, overrides={"ingest.workers": 3})
    assert cfg.root == "s3://bucket/x" and cfg.ingest.min_side == 128 and cfg.shards.maxcount == 50
    assert cfg.ingest.workers == 3 and cfg.ingest.max_pixels == IngestConfig().max_pixels


def test_unknown_nested_key_names_it_and_the_allowed_ones(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("ingest:\n  max_pixel: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "unknown key 'ingest.max_pixel'" in msg and str(p) in msg
    assert "max_pixels" in msg and "min_side" in msg and "maxcount" not in msg


def test_unknown_top_level_key(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("rooot: x\n")
    with pytest.raises(ConfigError, match=r"unknown key 'rooot'.*allowed here: demo, ingest, mining, models_dir, orchestration, root, shards, supervision, synthesis, train"):
        load_config(p)


def test_bad_value_is_reported_with_its_place(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("shards:\n  maxcount: 0\n")
    with pytest.raises(ConfigError, match=r"bad value for 'shards.maxcount'"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_missing_file_and_hash_changes_with_values(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    assert config_hash(IngestConfig()) == config_hash(IngestConfig())
    assert config_hash(IngestConfig()) != config_hash(IngestConfig(min_side=65))


def test_the_shipped_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")
    assert cfg == RunConfig(root="demo_out/root", models_dir="models")


@pytest.mark.parametrize("yaml_text, old, new", [
    ("orchestration:\n  units_in_flight: 2\n", "orchestration.units_in_flight", "orchestration.items_in_flight"),
    ("train:\n  stage: 2\n", "train.stage", "train.phase"),
    ("synthesis:\n  style:\n    contents_per_unit: 8\n", "synthesis.style.contents_per_unit",
     "synthesis.style.contents_per_item"),
])
def test_a_key_under_its_earlier_name_is_refused_in_one_line_naming_the_new_one(tmp_path, yaml_text, old, new):
    p = tmp_path / "run.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"'{old}' in {p} is now called '{new}': rename it"
    with pytest.raises(ConfigError, match=f"'{old}' in defaults is now called '{new}'"):
        load_config(None, overrides={old: 2})
    node = load_config(None, overrides={new: 2})  # the new name is taken
    *parents, leaf = new.split(".")
    for part in parents:
        node = getattr(node, part)
    assert getattr(node, leaf) == 2
