"""The config models dump, hash and describe themselves exactly as the committed snapshot says.

Config hashes and stage versions are digests of model_dump output, so a change here re-runs stages.
config_snapshot.json was written by the code before schemas/config became a package. When a field is added or
changed on purpose, regenerate it (models_dir's default is the machine's, so it is taken as ACEFORGE_MODELS=models):
    python -m tests.schemas.test_config_snapshot > tests/schemas/config_snapshot.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import schemas.config as config
from schemas.config import RunConfig, config_hash, load_config

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "configs" / "example.yaml"
TUPLES = ("SYNTH_TASKS", "TEXT_TASKS", "MAP_TASKS", "FACE_TASKS")


def snapshot() -> dict:
    example = load_config(EXAMPLE)
    return {
        "defaults": RunConfig().model_dump(mode="json"),
        "defaults_hash": config_hash(RunConfig()),
        "example_yaml": example.model_dump(mode="json"),
        "example_yaml_hash": config_hash(example),
        "task_tuples": {name: list(getattr(config, name)) for name in TUPLES},
        "json_schema": RunConfig.model_json_schema(),
    }


@pytest.fixture(scope="module")
def pair():
    saved = os.environ.pop("ACEFORGE_MODELS", None)
    os.environ["ACEFORGE_MODELS"] = "models"  # models_dir's default depends on the machine and working directory
    try:
        yield json.loads((HERE / "config_snapshot.json").read_text()), snapshot()
    finally:
        os.environ.pop("ACEFORGE_MODELS", None)
        if saved is not None:
            os.environ["ACEFORGE_MODELS"] = saved


@pytest.mark.parametrize("part", ["defaults", "example_yaml"])
def test_dump_is_the_snapshot_key_for_key_in_order(pair, part):
    want, got = pair
    # json.dumps keeps key order: the hash of model_dump_json depends on it
    assert json.dumps(got[part]) == json.dumps(want[part])
    assert got[f"{part}_hash"] == want[f"{part}_hash"]


def test_task_tuples_keep_their_members_and_order(pair):
    want, got = pair
    assert got["task_tuples"] == want["task_tuples"]


def test_fields_defaults_descriptions_and_constraints_are_the_snapshot(pair):
    want, got = pair
    assert got["json_schema"] == want["json_schema"]


if __name__ == "__main__":
    os.environ["ACEFORGE_MODELS"] = "models"
    print(json.dumps(snapshot(), indent=1))
