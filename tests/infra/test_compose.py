"""infra/compose against the Compose Specification's schema, and what the worker container needs."""

from __future__ import annotations

import json
import re

import jsonschema
import yaml

from tests.infra.common import INFRA, REPO, SCHEMAS

COMPOSE = INFRA / "compose" / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def test_compose_matches_the_specification():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_no_host_paths_and_every_volume_is_declared():
    spec = compose()
    for name, svc in spec["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            assert not source.startswith((".", "/", "~", "$")), f"{name}: host path {source}"
            assert source in spec["volumes"], f"{name}: undeclared volume {source}"


def test_worker_can_write_data_and_has_shared_memory():
    worker = compose()["services"]["worker"]
    mounts = {v.split(":")[1]: v for v in worker["volumes"]}
    assert "/data" in mounts and not mounts["/data"].endswith(":ro") and "/models" in mounts
    # a new named volume copies the image's folder: the image must create /data and /models for uid 1000
    chowned = re.search(r"chown (\d+):(\d+) ([^\n\\]+)", dockerfile())
    assert chowned and {"/data", "/models"} <= set(chowned.group(3).split())
    user = worker.get("user") or re.findall(r"^USER (\S+)", dockerfile(), re.M)[-1]
    assert user.split(":")[0] == chowned.group(1)
    size = worker["shm_size"]
    assert int(re.match(r"(\d+)", size).group(1)) * {"g": 1024, "m": 1}[size.rstrip("bB")[-1].lower()] >= 1024


def test_deployments_of_the_container_use_the_containers_paths():
    worker = compose()["services"]["worker"]
    command = " ".join(worker["command"])
    pool = command.split("--pool ")[1].split()[0]
    spec = yaml.safe_load((INFRA / "compose" / "prefect.yaml").read_text())
    (step,) = spec["pull"]
    workdir = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert "$" not in workdir and re.search(rf"^WORKDIR {re.escape(workdir)}$", dockerfile(), re.M)
    assert worker.get("working_dir", workdir) == workdir
    for d in spec["deployments"]:
        assert d["work_pool"]["name"] == pool
        assert d["parameters"]["root"].startswith("/data/")
    assert "infra/compose/prefect.yaml" in dockerfile()  # the file is in the image it is deployed from
    assert worker["environment"]["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith("/data/")
    root = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["name"] for d in root["deployments"]} == {d["name"] for d in spec["deployments"]}
