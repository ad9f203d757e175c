"""The Kubernetes work pool's base job template, through prefect-kubernetes' own code: the job
configuration a worker builds for a flow run (its manifest checks included), the server's template check,
and the deployments of infra/k8s/prefect.yaml. Offline: no server, no cluster."""

from __future__ import annotations

import asyncio
import copy
import uuid

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect.server.schemas.actions import WorkPoolCreate
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from tests.infra.common import K8S, rendered, template
from tests.infra.test_k8s_schemas import named_kubernetes_versions

API_URL = "http://prefect-server.aceforge.svc:4200/api"
# prefect-kubernetes insists on these two inside the pod spec (its job-manifest check); the API server
# drops them there with a warning. The Job's own parallelism/completions are the real ones.
PREFECT_POD_KEYS = ("parallelism", "completions")


class _NoServer:
    """Stands in for the Prefect client: any use would mean the template reaches for the server."""

    def __getattr__(self, name):
        raise AssertionError(f"the job template needed the Prefect API ({name})")


def k8s_deployments() -> dict[str, dict]:
    spec = yaml.safe_load((K8S / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def job_config(values: dict) -> KubernetesWorkerJobConfiguration:
    cfg = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template(), values,
                                                                                client=_NoServer()))
    cfg.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="brave-otter", flow_id=uuid.uuid4()))
    return cfg


def deployment_values(name: str) -> dict:
    values = copy.deepcopy(k8s_deployments()[name]["work_pool"]["job_variables"])
    assert values["image"] == "{{ $ACEFORGE_IMAGE }}"
    values["image"] = "registry.example.com/aceforge:0.1.0"  # what the registration Job's env holds
    return values


def test_server_accepts_the_template():
    WorkPoolCreate(name="aceforge-k8s", type="kubernetes", base_job_template=template())


def test_variables_cover_prefects_defaults_and_allow_null_where_they_do():
    ours = template()["variables"]["properties"]
    default = KubernetesWorker.get_default_base_job_template()["variables"]["properties"]
    assert sorted(set(default) - set(ours)) == []
    for name, var in default.items():
        if name == "image":  # deliberately required: Prefect's null means its own image, not ours
            continue
        if any(t.get("type") == "null" for t in var.get("anyOf", [])):
            assert any(t.get("type") == "null" for t in ours[name].get("anyOf", [])), name


@pytest.mark.parametrize("deployment", ["mine", "train"])
def test_a_flow_run_gets_a_valid_job(deployment):
    job = job_config(deployment_values(deployment)).job_manifest
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "registry.example.com/aceforge:0.1.0"
    assert env["PREFECT_API_URL"] == API_URL
    assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith("/data/")  # results survive the pod
    assert env["RAY_ADDRESS"].startswith("ray://aceforge-ray-head-svc.aceforge.svc:")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims[mounts["/data"]] == "aceforge-data" and claims[mounts["/models"]] == "aceforge-models"
    assert pod["serviceAccountName"] == "aceforge"
    assert job["metadata"]["namespace"] == "aceforge"
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["backoffLimit"] == 0
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"] == 1000
    stripped = copy.deepcopy(job)
    for k in PREFECT_POD_KEYS:
        stripped["spec"]["template"]["spec"].pop(k)
    for version in named_kubernetes_versions():
        kubernetes_validate.validate(stripped, f"{version}.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):  # and nothing else is unknown to the API
        kubernetes_validate.validate(job, f"{named_kubernetes_versions()[0]}.0", strict=True)


def test_training_runs_get_the_memory_the_export_needs():
    res = job_config(deployment_values("train")).job_manifest["spec"]["template"]["spec"]["containers"][0]
    gib = int(res["resources"]["requests"]["memory"].removesuffix("Gi"))
    assert gib >= 80  # the export loads FLUX.1-Fill (11.9 B) + T5-XXL (4.8 B) in fp32: about 68 GB


def test_deployments_set_valid_job_variables_for_this_pool():
    variables = template()["variables"]
    for name, dep in k8s_deployments().items():
        assert dep["work_pool"]["name"] == "aceforge-k8s"
        merged = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
        merged.update(deployment_values(name))
        jsonschema.Draft202012Validator(variables).validate(merged)
        assert set(deployment_values(name)) <= set(variables["properties"]), name
    # without an image no flow run can start: the pool demands one
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v["default"] for k, v in variables["properties"].items() if "default" in v},
                            variables)


def test_the_pool_the_deployments_name_is_the_one_the_cluster_creates():
    objs = {(o["kind"], o["metadata"]["name"]): o for o in rendered()["cluster"]}
    worker = objs[("Deployment", "prefect-worker")]["spec"]["template"]["spec"]["containers"][0]
    register = objs[("Job", "aceforge-register")]["spec"]["template"]["spec"]["containers"][0]
    pool = worker["command"][worker["command"].index("--pool") + 1]
    assert pool == "aceforge-k8s" and worker["command"][worker["command"].index("--type") + 1] == "kubernetes"
    script = " ".join(register["args"])
    assert f"work-pool create {pool} --type kubernetes" in script
    assert "--base-job-template infra/k8s/base-job-template.json" in script
    assert "--prefect-file infra/k8s/prefect.yaml" in script
    env = {e["name"]: e["value"] for e in register["env"]}
    assert env["ACEFORGE_IMAGE"] == register["image"] and "/" in register["image"]
    assert {e["name"]: e["value"] for e in worker["env"]}["PREFECT_API_URL"] == API_URL
    assert {d["work_pool"]["name"] for d in k8s_deployments().values()} == {pool}
