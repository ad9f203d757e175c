"""Paths, loaders and a small Kustomize renderer for the infra tests (no cluster, no Docker engine).

The renderer covers exactly the Kustomize features infra/k8s uses (resources, components, namespace,
images, JSON 6902 patches with a target, configMapGenerator without name hash, replacements); it refuses
anything else, and test_kustomize.py checks it against `kubectl kustomize` where kubectl is installed."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "images", "patches",
                  "configMapGenerator", "replacements"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition"}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


# --- field paths as Kustomize writes them: a.b.[name=x].c.0 ---------------------------------------------

def _steps(field_path: str) -> list[str]:
    return [s for s in re.findall(r"\[[^\]]*\]|[^.\[\]]+", field_path)]


def _child(node: Any, step: str) -> Any:
    if step.startswith("["):
        k, v = step[1:-1].split("=", 1)
        found = [item for item in node if isinstance(item, dict) and item.get(k) == v]
        assert len(found) == 1, f"{step}: {len(found)} matches"
        return found[0]
    if isinstance(node, list):
        return node[int(step)]
    return node[step]


def get_path(obj: dict, field_path: str) -> Any:
    node = obj
    for step in _steps(field_path):
        node = _child(node, step)
    return node


def set_path(obj: dict, field_path: str, value: Any) -> None:
    steps = _steps(field_path)
    node = obj
    for step in steps[:-1]:
        node = _child(node, step)
    last = steps[-1]
    assert not last.startswith("["), field_path
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def containers(obj: Any) -> Iterator[dict]:
    """Every container and init container anywhere in an object (pod templates nested in CRs included)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                yield from (c for c in v if isinstance(c, dict))
            else:
                yield from containers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from containers(v)


def pod_specs(obj: Any) -> Iterator[dict]:
    """Every pod spec: a dict holding `containers` (Deployments, Jobs, Ray groups, submitter templates)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield obj
        for v in obj.values():
            yield from pod_specs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from pod_specs(v)


# --- the renderer ------------------------------------------------------------------------------------------

def _image_name(image: str) -> str:
    return re.split(r"[@]", image)[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image.split("@")[0]


def _apply_images(objs: list[dict], images: list[dict]) -> None:
    for obj in objs:
        for c in containers(obj):
            for rule in images:
                if _image_name(c.get("image", "")) == rule["name"]:
                    assert set(rule) <= {"name", "newName", "newTag"}, rule
                    c["image"] = rule.get("newName", rule["name"]) + (f":{rule['newTag']}" if "newTag" in rule else "")


def _json_pointer_set(obj: dict, pointer: str, value: Any, op: str) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
    node = obj
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {}) if op == "add" else node[p]
    if op == "replace":
        assert parts[-1] in node, pointer
    node[parts[-1]] = value


def _apply_patches(objs: list[dict], patches: list[dict]) -> None:
    for patch in patches:
        assert set(patch) == {"target", "patch"} and set(patch["target"]) <= {"kind", "name"}, patch
        ops = yaml.safe_load(patch["patch"])
        for obj in objs:
            if all(obj.get("kind") == v if k == "kind" else obj["metadata"].get("name") == v
                   for k, v in patch["target"].items()):
                for op in ops:
                    assert op["op"] in ("add", "replace"), op
                    _json_pointer_set(obj, op["path"], copy.deepcopy(op["value"]), op["op"])


def _select(objs: list[dict], sel: dict) -> list[dict]:
    return [o for o in objs if o["kind"] == sel["kind"] and o["metadata"]["name"] == sel["name"]]


def _apply_replacements(objs: list[dict], replacements: list[dict]) -> None:
    for r in replacements:
        src = _select(objs, r["source"])
        assert len(src) == 1, r["source"]
        value = get_path(src[0], r["source"]["fieldPath"])
        for target in r["targets"]:
            for obj in _select(objs, target["select"]):
                for fp in target["fieldPaths"]:
                    set_path(obj, fp, value)


def render(folder: Path) -> list[dict]:
    """The objects `kubectl kustomize <folder>` prints (order aside)."""
    kz = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kz) <= KUSTOMIZE_KEYS, f"unsupported Kustomize keys: {set(kz) - KUSTOMIZE_KEYS}"
    objs: list[dict] = []
    for res in kz.get("resources", []):
        path = folder / res
        objs += render(path) if path.is_dir() else load_docs(path)
    for gen in kz.get("configMapGenerator", []):
        assert gen["options"] == {"disableNameSuffixHash": True} and set(gen) == {"name", "files", "options"}
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
                     "data": {Path(f).name: (folder / f).read_text() for f in gen["files"]}})
    for comp in kz.get("components", []):
        ckz = yaml.safe_load((folder / comp / "kustomization.yaml").read_text())
        assert ckz["kind"] == "Component" and set(ckz) <= {"apiVersion", "kind", "images", "patches"}, ckz.keys()
        _apply_patches(objs, ckz.get("patches", []))
        _apply_images(objs, ckz.get("images", []))
    if "namespace" in kz:
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kz["namespace"]
    _apply_patches(objs, kz.get("patches", []))
    _apply_images(objs, kz.get("images", []))
    _apply_replacements(objs, kz.get("replacements", []))
    return objs


def rendered() -> dict[str, list[dict]]:
    """Every kustomization: the cluster (infra/k8s), the training RayJob, the loader pod."""
    return {"cluster": render(K8S), "train-job": render(K8S / "train-job"), "loader": render(K8S / "loader")}


def template() -> dict:
    return json.loads((K8S / "base-job-template.json").read_text())
