"""The renderer the infra tests use (tests/infra/common.py) prints what `kubectl kustomize` prints."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.infra.common import K8S, key, render


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", [".", "train-job", "loader"])
def test_renderer_agrees_with_kubectl(folder):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / folder)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    theirs = {key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {key(o): o for o in render(K8S / folder)}
    assert ours == theirs


def test_renderer_refuses_features_it_does_not_know(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(AssertionError, match="namePrefix"):
        render(tmp_path)
