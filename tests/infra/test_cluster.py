"""Cross-file facts of infra/k8s: what a manifest names is defined, the Ray groups fit what the stages
declare, every place a run starts reaches the Prefect server, deadlines, volumes and identities."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from schemas.config import RunConfig
from tests.infra.common import K8S, REPO, containers, key, lock_pins, pod_specs, rendered

API_URL = "http://prefect-server.aceforge.svc:4200/api"
SETTINGS = K8S / "settings" / "kustomization.yaml"


def everything() -> list[dict]:
    return [o for objs in rendered().values() for o in objs]


def defined(kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in everything() if o["kind"] == kind}


def ray_groups(spec: dict) -> dict[str, dict]:
    """name -> {cpus, gpus, memory_gi, resources} as Ray sees each group's nodes."""
    groups = {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}
    out = {}
    for name, g in groups.items():
        c = g["template"]["spec"]["containers"][0]
        limits, params = c["resources"]["limits"], g.get("rayStartParams", {})
        custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
        out[name] = {"cpus": float(params.get("num-cpus", limits["cpu"])),
                     "gpus": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
                     "memory_gi": int(limits["memory"].removesuffix("Gi")), "resources": custom}
    return out


def ray_specs() -> dict[str, dict]:
    objs = {key(o): o for o in everything()}
    return {"RayCluster": objs[("RayCluster", "aceforge-ray")]["spec"],
            "RayJob": objs[("RayJob", "aceforge-train")]["spec"]["rayClusterSpec"]}


def declared_resources() -> list[tuple[str, float, float]]:
    """Every `Resources(cpus=..., gpus=...)` the stages, the runtime and model wrappers declare."""
    found = []
    for path in [p for pkg in ("stages", "runtime", "mining") for p in (REPO / pkg).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Resources" and node.keywords:
                if not all(isinstance(k.value, ast.Constant) for k in node.keywords):
                    continue  # passes another declaration through (stages/corpus/embed.py)
                kw = {k.arg: k.value.value for k in node.keywords if k.arg in ("cpus", "gpus")}
                found.append((path.name, float(kw.get("cpus", 1.0)), float(kw.get("gpus", 0.0))))
    assert len(found) >= 5
    return found


def train_config() -> RunConfig:
    cm = next(o for o in everything() if key(o) == ("ConfigMap", "aceforge-train-config"))
    return RunConfig.model_validate(yaml.safe_load(cm["data"]["train.yaml"]))


# --- what a manifest names is defined -----------------------------------------------------------------

def test_every_claim_configmap_and_service_account_named_is_defined():
    claims, config_maps, accounts = defined("PersistentVolumeClaim"), defined("ConfigMap"), defined("ServiceAccount")
    tpl = json.loads((K8S / "base-job-template.json").read_text())["variables"]["properties"]
    assert {tpl["data_pvc"]["default"], tpl["models_pvc"]["default"]} <= claims
    assert tpl["service_account_name"]["default"] in accounts
    for obj in everything():
        for pod in pod_specs(obj):
            assert pod.get("serviceAccountName") in accounts, key(obj)
            for vol in pod.get("volumes", []):
                if "persistentVolumeClaim" in vol:
                    assert vol["persistentVolumeClaim"]["claimName"] in claims, (key(obj), vol)
                if "configMap" in vol:
                    assert vol["configMap"]["name"] in config_maps, (key(obj), vol)
    assert {"aceforge", "prefect-worker"} <= accounts
    binding = next(o for o in everything() if o["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] in defined("Role")
    assert [s["name"] for s in binding["subjects"]] == ["prefect-worker"]
    assert {o["metadata"].get("namespace") for o in everything() if o["kind"] != "Namespace"} == defined("Namespace")


def test_images_carry_the_registry_set_in_one_place():
    settings = yaml.safe_load(SETTINGS.read_text())
    (rule,) = settings["images"]
    image = f"{rule['newName']}:{rule['newTag']}"
    assert "/" in rule["newName"] and "." in rule["newName"].split("/")[0]  # a registry host
    assert {c["image"] for o in everything() for c in containers(o)} == {image}
    for path in K8S.rglob("*.yaml"):  # the registry is written nowhere else
        if path != SETTINGS:
            assert rule["newName"] not in path.read_text(), path


def test_storage_class_and_sizes_are_set_in_settings_only():
    claims = {o["metadata"]["name"]: o for o in everything() if o["kind"] == "PersistentVolumeClaim"}
    assert claims["aceforge-data"]["spec"]["accessModes"] == ["ReadWriteMany"]  # every Ray node writes it
    assert "ReadWriteOnce" not in claims["aceforge-models"]["spec"]["accessModes"]  # every node reads it
    settings = SETTINGS.read_text()
    for name in ("aceforge-data", "aceforge-models"):
        spec = claims[name]["spec"]
        assert spec["storageClassName"] in settings and spec["resources"]["requests"]["storage"] in settings
    for path in K8S.rglob("*.yaml"):
        if path != SETTINGS:
            assert "storageClassName" not in path.read_text(), path


def test_ray_version_is_the_locks():
    ray = lock_pins()["ray"]
    for name, spec in ray_specs().items():
        assert spec["rayVersion"] == ray, name


# --- the groups fit the stages -----------------------------------------------------------------------

def test_cpu_stages_have_a_cpu_group_and_cannot_fill_gpu_nodes():
    cfg = train_config().train
    gpu_needs = [c for _, c, g in declared_resources() if g > 0] + [cfg.cpus_per_worker]
    for name, spec in ray_specs().items():
        groups = ray_groups(spec)
        assert groups["head"]["cpus"] == 0 and groups["head"]["gpus"] == 0, name  # the head only schedules
        for g in (g for n, g in groups.items() if n != "head" and g["gpus"] > 0):
            assert g["cpus"] <= max(gpu_needs) * g["gpus"], (name, g)  # no room for CPU stages beside
    cluster = ray_groups(ray_specs()["RayCluster"])
    for stage, cpus, gpus in declared_resources():
        fits = [n for n, g in cluster.items() if g["cpus"] >= cpus and g["gpus"] >= gpus
                and (gpus > 0) == (g["gpus"] > 0)]
        assert fits, f"{stage}: no group of the RayCluster runs Resources(cpus={cpus}, gpus={gpus})"


def test_training_workers_fit_the_gpu_groups():
    cfg = train_config().train
    assert cfg.use_gpu == "yes"
    for name, spec in ray_specs().items():
        gpu = [g for g in spec["workerGroupSpecs"] if ray_groups(spec)[g["groupName"]]["gpus"] >= 1]
        assert gpu, name
        assert any(ray_groups(spec)[g["groupName"]]["cpus"] >= cfg.cpus_per_worker
                   and g["maxReplicas"] >= cfg.num_workers for g in gpu), name


def test_training_config_is_one_config():
    cfg = train_config()
    assert cfg.root.startswith("/data/") and cfg.models_dir == "/models" and cfg.train.base.startswith("/models/")
    deps = {d["name"]: d for d in yaml.safe_load((K8S / "prefect.yaml").read_text())["deployments"]}
    train = deps["train"]["parameters"]
    assert RunConfig.model_validate({**train["config"], "root": train["root"]}) == cfg


# --- runs reach the server; exports; deadlines --------------------------------------------------------

def test_every_place_a_run_starts_reaches_the_prefect_server():
    service = next(o for o in everything() if key(o) == ("Service", "prefect-server"))
    port = service["spec"]["ports"][0]["port"]
    assert API_URL == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}/api"
    for obj in everything():
        if obj["apiVersion"].startswith("ray.io/") or key(obj) in {("Deployment", "prefect-worker"),
                                                                 ("Job", "aceforge-register")}:
            for c in containers(obj):
                if c["name"] != "ray-job-submitter":
                    assert {e["name"]: e.get("value") for e in c.get("env", [])}.get("PREFECT_API_URL") \
                        == API_URL, (key(obj), c["name"])
    job = next(o for o in everything() if o["kind"] == "RayJob")["spec"]
    assert yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]["PREFECT_API_URL"] == API_URL


def test_the_training_job_exports_off_the_head_and_has_a_deadline():
    job = next(o for o in everything() if o["kind"] == "RayJob")["spec"]
    groups = ray_groups(job["rayClusterSpec"])
    wanted = json.loads(job["entrypointResources"])
    hosts = [n for n, g in groups.items() if all(g["resources"].get(r, 0) >= q for r, q in wanted.items())]
    assert hosts and "head" not in hosts
    assert all(groups[n]["memory_gi"] >= 80 for n in hosts)  # the fp32 base for the export: about 68 GB
    driver = next(g for g in job["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] in hosts)
    mounts = {m["mountPath"] for m in driver["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/config" in mounts and "-c /config/train.yaml" in job["entrypoint"]
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] == 0
    assert job["shutdownAfterJobFinishes"] is True


def test_every_pod_runs_as_the_images_numeric_user_and_can_write_the_data_volume():
    for obj in everything():
        for pod in pod_specs(obj):
            sc = pod.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 1000, key(obj)
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                      if "persistentVolumeClaim" in v]
            if claims:
                assert sc.get("fsGroup") == 1000, key(obj)
            for c in pod["containers"]:
                assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False, key(obj)
    assert "USER 1000:1000" in (REPO / "infra" / "Dockerfile").read_text()


def test_every_manifest_file_is_used():
    used = {Path(p).resolve() for folder in (K8S, K8S / "train-job", K8S / "loader", K8S / "settings")
            for p in [folder / "kustomization.yaml",
                      *[folder / r for r in yaml.safe_load((folder / "kustomization.yaml").read_text())
                        .get("resources", [])]]}
    used |= {(K8S / "train.yaml").resolve(), (K8S / "prefect.yaml").resolve()}
    assert {p.resolve() for p in K8S.rglob("*.yaml")} <= used
