import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.deploy import server_command

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait(pred, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        try:
            got = pred()
            if got:
                return got
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_shards_landed_event_creates_a_training_run_with_the_shard_uri(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "HF_HUB_OFFLINE": "1"}
    cmd, server_env = server_command("127.0.0.1", port)
    procs = [subprocess.Popen(cmd, env={**server_env, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        _wait(lambda: _api(api, "/health") is True, 120, "the Prefect server")
        serve = ("from flows.deploy import serve; serve(None, %r)" % str(tmp_path / "root"))
        procs.append(subprocess.Popen([sys.executable, "-c", serve], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        deployment = _wait(lambda: _api(api, "/deployments/name/aceforge-train/train"), 120, "the deployment")
        _wait(lambda: any("train-when-shards-land" in a["name"] for a in _api(api, "/automations/filter", {})),
              60, "the trigger's automation")  # registered just after the deployment
        shard_uri = str(tmp_path / "root" / "shards" / "demo-general_editing")
        emit = ("from prefect.events import emit_event; emit_event('aceforge.shards.landed', "
                "resource={'prefect.resource.id': 'aceforge.shards.test'}, payload={'shard_uri': %r, "
                "'manifest': %r})" % (shard_uri, shard_uri + "/manifest.parquet"))
        subprocess.run([sys.executable, "-c", emit], env=env, cwd=REPO, check=True, timeout=60)

        def created():
            runs = _api(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
            return [r for r in runs if r["parameters"].get("shard_uri") == shard_uri]

        runs = _wait(created, 90, "a triggered training run")
        assert runs[0]["parameters"]["root"] == str(tmp_path / "root")
    finally:
        for p in reversed(procs):
            for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):  # a runner may ignore the first SIGTERM
                if p.poll() is None:
                    os.killpg(p.pid, sig)
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass


def test_prefect_yaml_declares_both_deployments_and_the_trigger():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"mine", "train"}
    assert deps["mine"]["schedules"][0]["active"] is False  # off by default
    trig = deps["train"]["triggers"][0]
    assert trig["expect"] == ["aceforge.shards.landed"]
    assert trig["parameters"]["shard_uri"] == "{{ event.payload.shard_uri }}"
    for d in deps.values():
        path, fn = d["entrypoint"].split(":")
        src = (REPO / path).read_text()
        assert f"def {fn}(" in src and d["work_pool"]["name"] == "aceforge-local"
