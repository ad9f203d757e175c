import json
import re
from pathlib import Path

import jsonschema
import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"


def test_base_job_template_placeholders_are_declared_variables():
    tpl = json.loads((INFRA / "k8s" / "base-job-template.json").read_text())
    jsonschema.Draft7Validator.check_schema(tpl["variables"])
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    assert used and used <= set(tpl["variables"]["properties"])
    job = tpl["job_configuration"]["job_manifest"]
    assert job["kind"] == "Job" and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    defaults = {k: v["default"] for k, v in tpl["variables"]["properties"].items() if "default" in v}
    jsonschema.validate(defaults, tpl["variables"])
    assert defaults["env"]["HF_HUB_OFFLINE"] == "1"


def test_kuberay_manifests():
    cluster = yaml.safe_load((INFRA / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((INFRA / "kuberay" / "rayjob-train.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert spec["rayVersion"] == "2.60.0"
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in head["resources"]["limits"]  # CPU head
        workers = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["entrypoint"].split()[:2] == ["aceforge", "train"]


def test_compose_and_dockerfile():
    compose = yaml.safe_load((INFRA / "compose" / "docker-compose.yml").read_text())
    srv = compose["services"]["prefect-server"]
    assert "postgresql+asyncpg://" in srv["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert srv["image"].startswith("prefecthq/prefect:3.8.8")
    assert compose["services"]["worker"]["command"][-3:] == ["aceforge-local", "--type", "process"]
    docker = (INFRA / "Dockerfile").read_text()
    assert "requirements.lock" in docker and "fonts-wqy-microhei" in docker
    for pkg in ("schemas", "mining", "tasks", "flows", "trainer"):
        assert f"COPY {pkg} ./{pkg}" in docker
