"""Every object the kustomizations render, against the real schemas: the Kubernetes API of each version
infra/README.md names (kubernetes-validate, strict: unknown fields are errors) and the KubeRay CRDs of the
operator version it names (strict as `kubectl apply --validate=strict` on a structural schema)."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from tests.infra.common import INFRA, SCHEMAS, key, rendered

README = (INFRA / "README.md").read_text()


def named_kubernetes_versions() -> list[str]:
    m = re.search(r"^\| Kubernetes \| ([0-9., ]+)", README, re.M)
    assert m, "infra/README.md must name the Kubernetes versions (| Kubernetes | 1.x, 1.y |)"
    return [v.strip() for v in m.group(1).split(",") if v.strip()]


def versions_to_check() -> list[str]:
    """For parametrize: the named versions, or one that fails the tests when the README names none."""
    m = re.search(r"^\| Kubernetes \| ([0-9., ]+)", README, re.M)
    return [v.strip() for v in m.group(1).split(",") if v.strip()] if m else ["(none named in infra/README.md)"]


def named_kuberay_version() -> str:
    m = re.search(r"^\| KubeRay operator \| (\d+\.\d+\.\d+)", README, re.M)
    assert m, "infra/README.md must name the KubeRay operator version"
    return m.group(1)


def core_objects():
    return [(name, o) for name, objs in rendered().items() for o in objs if not o["apiVersion"].startswith("ray.io/")]


def test_readme_names_versions_we_hold_schemas_for():
    versions = named_kubernetes_versions()
    assert versions and all(f"{v}.0" in all_versions() for v in versions)
    assert (SCHEMAS / f"kuberay-{named_kuberay_version()}-rayjob.json").is_file()


@pytest.mark.parametrize("version", versions_to_check())
def test_core_objects_validate_strictly(version):
    assert version in named_kubernetes_versions()
    errors = []
    for where, obj in core_objects():
        try:
            kubernetes_validate.validate(obj, f"{version}.0", strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where} {key(obj)} {'/'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


def test_strict_core_validation_rejects_an_unknown_field():
    pvc = next(o for _, o in core_objects() if o["kind"] == "PersistentVolumeClaim")
    bad = copy.deepcopy(pvc)
    bad["spec"]["storageClass"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, f"{named_kubernetes_versions()[0]}.0", strict=True)


def _strict(schema):
    """A structural CRD schema with unknown fields rejected (what --validate=strict does)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(s)
    # metadata is validated by the API server's ObjectMeta, not by the CRD's schema
    s["properties"]["metadata"] = {"type": "object"}
    return s


def crd_validator(kind: str):
    doc = json.loads((SCHEMAS / f"kuberay-{named_kuberay_version()}-{kind.lower()}.json").read_text())
    assert doc["kind"] == kind
    return doc["group"] + "/" + doc["version"], jsonschema.Draft7Validator(_strict(doc["openAPIV3Schema"]))


def ray_objects():
    return [o for objs in rendered().values() for o in objs if o["apiVersion"].startswith("ray.io/")]


def test_ray_objects_match_the_kuberay_crds():
    kinds = sorted(o["kind"] for o in ray_objects())
    assert kinds == ["RayCluster", "RayJob"]
    for obj in ray_objects():
        api_version, validator = crd_validator(obj["kind"])
        assert obj["apiVersion"] == api_version
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{obj['kind']}: " + "\n".join(errors)


def test_strict_crd_validation_rejects_an_unknown_field():
    cluster = next(o for o in ray_objects() if o["kind"] == "RayCluster")
    bad = copy.deepcopy(cluster)
    bad["spec"]["headGroupSpec"]["numCpus"] = 0
    assert not crd_validator("RayCluster")[1].is_valid(bad)
