"""Deployments against a real local Prefect server: a process worker and `serve`, as a user runs them.

Slow (a server, a worker, mining and training runs): CI runs them; `-m "not slow"` leaves them out.
"""

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
BIN = Path(sys.executable).parent
PRESET = "general_editing"
CFG = {"shards": {"maxcount": 32}, "mining": {"clusters_per_batch": 1, "k": 3},
       "train": {"base": "tiny", "max_steps": 2, "checkpoint_every": 2, "max_tokens": 256, "lora_rank": 8,
                 "max_sequence_length": 64, "num_workers": 1}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path):
        port = _free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                    "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                    "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp / "results"), "HF_HUB_OFFLINE": "1"}
        cmd, server_env = server_command("127.0.0.1", port)
        self.procs = [self.spawn(cmd, {**server_env, **self.env})]
        wait(lambda: self.get("/health") is True, 120, "the Prefect server")

    def spawn(self, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(Path(self.env["PREFECT_HOME"]).parent / f"proc-{len(getattr(self, 'procs', []))}.log", "wb")
        return subprocess.Popen(cmd, env=env or self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def get(self, path: str):
        with urllib.request.urlopen(self.api + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.api + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read()) if r.length != 0 else None

    def cli(self, *args: str) -> str:
        res = subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    def runs(self, deployment_id: str) -> list[dict]:
        return self.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})

    def task_runs(self, flow_run_id: str) -> list[dict]:
        """Task runs of a flow run and of its subflow runs."""
        subs = self.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})
        ids = [flow_run_id, *(s["id"] for s in subs)]
        return self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}, "limit": 200})

    def stop(self, proc: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def wait(pred, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        try:
            got = pred()
            if got:
                return got
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def final(server: Server, run_id: str, timeout: float) -> dict:
    run = wait(lambda: (lambda r: r if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None)(
        server.get(f"/flow_runs/{run_id}")), timeout, f"flow run {run_id} to finish")
    return run


def group_alive(proc: subprocess.Popen) -> bool:
    try:
        os.killpg(proc.pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CFG))
    return path


@pytest.mark.slow
def test_worker_runs_the_cron_schedule_the_trigger_and_a_retry(server, demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    root = tmp_path / "root"
    cfg = _config_file(tmp_path)
    worker = server.spawn([str(BIN / "aceforge"), "deploy", "--worker", "--root", str(root), "--source", str(corpus),
                           "-c", str(cfg), "--schedule", "--cron", "* * * * *"])
    server.procs.append(worker)
    mine = wait(lambda: server.get("/deployments/name/aceforge-mine/mine"), 120, "the mining deployment")
    train = wait(lambda: server.get("/deployments/name/aceforge-train/train"), 60, "the training deployment")
    # every flag reached the deployments
    assert mine["parameters"] == {"source": str(corpus), "root": str(root), "config": CFG}
    assert train["parameters"]["root"] == str(root) and mine["entrypoint"] == "flows.pipelines.mine_flow"
    assert mine["work_pool_name"] == "aceforge-local" and not mine["paused"]
    assert [s["active"] for s in mine["schedules"]] == [True]

    # the cron schedule creates a run by itself and the worker completes it
    first = wait(lambda: sorted((r for r in server.runs(mine["id"]) if r["state_type"] != "SCHEDULED"),
                                key=lambda r: r["expected_start_time"]), 150, "a scheduled mining run to start")[0]
    assert first["auto_scheduled"]
    done = final(server, first["id"], 300)
    assert done["state_type"] == "COMPLETED", done["state"]
    tasks = server.task_runs(first["id"])
    names = {t["name"].rsplit("-", 1)[0] for t in tasks}
    assert {"ingest-partition", "embed-partition", "kmeans", "mine-general_editing-batch"} <= names
    # packing runs in units, then one finalize writes the manifest and the marker
    assert f"pack-mined-{PRESET}-unit" in names and f"pack-mined-{PRESET}-finalize" in {t["name"] for t in tasks}
    assert {t["state_name"] for t in tasks} <= {"Completed", "Cached"}
    shard_set = root / "shards" / f"mined-{PRESET}"
    assert (shard_set / "_SUCCESS.json").exists()

    # pause the schedule: the runs it had scheduled go, and no new one comes
    schedule_id = mine["schedules"][0]["id"]
    server.cli("deployment", "schedule", "pause", "aceforge-mine/mine", schedule_id)
    time.sleep(12)  # two scheduler loops
    assert not [r for r in server.runs(mine["id"]) if r["state_type"] == "SCHEDULED"]

    # the landed event started training, beside the shards, and it completed
    trained = wait(lambda: server.runs(train["id"]), 60, "a triggered training run")[0]
    assert trained["parameters"]["shard_uris"] == [str(shard_set)]
    assert trained["parameters"]["root"] == str(root)
    done = final(server, trained["id"], 400)
    assert done["state_type"] == "COMPLETED", done["state"]
    assert list((root / "checkpoints" / "exports").glob("p1-*/comfyui_lora.safetensors"))

    # a run whose mining batch fails is retried with `prefect flow-run retry`: only unfinished items run
    root2 = tmp_path / "root2"
    blocker = root2 / "pairs" / PRESET / "batches" / _batch_dir(corpus, tmp_path / "scratch", 1)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the batch's folder goes")
    out = server.cli("deployment", "run", "aceforge-mine/mine", "--param", f"root={root2}")
    run_id = next(w for w in out.split() if w.count("-") == 4 and len(w) == 36)
    failed = final(server, run_id, 300)
    assert failed["state_type"] == "FAILED"
    finished = {p: p.stat().st_mtime_ns for p in root2.rglob("_SUCCESS.json")}
    assert root2 / "catalog" / "_SUCCESS.json" in finished and not (root2 / "pairs" / PRESET / "_SUCCESS.json").exists()
    blocker.unlink()
    retried_at = time.time()
    server.cli("flow-run", "retry", run_id)
    done = final(server, run_id, 300)
    assert done["state_type"] == "COMPLETED", done["state"]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was rewritten
    assert (blocker / "_SUCCESS.json").exists()
    assert (root2 / "shards" / f"mined-{PRESET}" / "_SUCCESS.json").exists()
    again = [t for t in server.task_runs(run_id)
             if t["start_time"] and time.mktime(time.strptime(t["start_time"][:19], "%Y-%m-%dT%H:%M:%S"))
             - time.timezone >= retried_at - 1]
    states = {t["name"]: t["state_name"] for t in again}
    # stages complete in the failed attempt (ingest, embed, kmeans) are not even planned again
    assert not [n for n in states if n.split("-")[0] in ("ingest", "embed", "kmeans")], states
    for item in (f"mine-{PRESET}-batch-0", f"mine-{PRESET}-batch-2"):  # finished items: Cached, not executed
        assert states[item] == "Cached", states
    assert states[f"mine-{PRESET}-batch-1"] == "Completed"

    # SIGTERM to `aceforge deploy --worker` stops the worker too
    server.stop(worker)
    assert worker.poll() is not None and not group_alive(worker)


def _batch_dir(corpus, scratch, k: int) -> str:
    """The name mining batch k gets for this corpus and CFG (named by its content: worked out on a scratch
    root through the clustering, which is deterministic)."""
    from flows.pipelines import run_config
    from stages.corpus.cluster import cluster_stages
    from stages.corpus.embed import EmbedStage
    from runtime.executors import LocalExecutor
    from stages.corpus.ingest import IngestStage
    from stages.pairs.mine import MineStage

    cfg = run_config(CFG, str(scratch))
    for stage in (IngestStage(cfg, source=str(corpus)), EmbedStage(cfg), *cluster_stages(cfg)):
        LocalExecutor().run(stage)
    return MineStage(cfg, preset=PRESET)._batches()[k].rsplit("/", 1)[-1]


@pytest.mark.slow
def test_serve_schedule_resumes_and_demo_events_do_not_train(server, tmp_path):
    root = tmp_path / "root"
    cfg = _config_file(tmp_path)
    serve = server.spawn([str(BIN / "aceforge"), "deploy", "--root", str(root), "-c", str(cfg),
                          "--cron", "* * * * *"])
    server.procs.append(serve)
    mine = wait(lambda: server.get("/deployments/name/aceforge-mine/mine"), 120, "the mining deployment")
    train = wait(lambda: server.get("/deployments/name/aceforge-train/train"), 60, "the training deployment")
    wait(lambda: any("train-when-shards-land" in a["name"] for a in server.post("/automations/filter", {})),
         60, "the trigger's automation")
    # the schedule is inactive, the deployment itself is not paused
    assert not mine["paused"] and [s["active"] for s in mine["schedules"]] == [False]
    time.sleep(12)
    assert server.runs(mine["id"]) == []
    server.cli("deployment", "schedule", "resume", "aceforge-mine/mine", mine["schedules"][0]["id"])
    wait(lambda: server.runs(mine["id"]), 60, "a scheduled run after resume")

    def emit(resource: str, shard_uri: str) -> None:
        code = ("from prefect.events import emit_event; emit_event('aceforge.shards.landed', "
                f"resource={{'prefect.resource.id': {resource!r}}}, payload={{'shard_uris': [{shard_uri!r}], "
                f"'root': {str(root)!r}}})")
        subprocess.run([sys.executable, "-c", code], env=server.env, cwd=REPO, check=True, timeout=60)

    demo_uri, real_uri = str(root / "shards" / "demo-x"), str(root / "shards" / "mined-x")
    emit("aceforge.demo.shards.demo-x", demo_uri)
    emit("aceforge.shards.mined-x", real_uri)
    runs = wait(lambda: server.runs(train["id"]), 90, "a triggered training run")
    time.sleep(5)  # the demo event was emitted first: had it matched, its run would be here by now
    assert [r["parameters"]["shard_uris"] for r in server.runs(train["id"])] == [[real_uri]]
    assert runs[0]["parameters"]["root"] == str(root)

    # undeploy removes both deployments and the trigger's automation
    server.stop(serve)
    out = subprocess.run([str(BIN / "aceforge"), "undeploy"], env=server.env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert not [a for a in server.post("/automations/filter", {}) if "train-when-shards-land" in a["name"]]
    assert not [d for d in server.post("/deployments/filter", {}) if d["name"] in ("mine", "train")]


def test_deploy_without_a_server_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    res = subprocess.run([str(BIN / "aceforge"), "deploy", "--root", str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert "no Prefect server configured" in res.stdout and "Traceback" not in res.stdout + res.stderr


def test_prefect_yaml_declares_both_deployments_with_module_entrypoints():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"mine", "train"}
    assert deps["mine"]["schedules"][0]["active"] is False  # off by default
    trig = deps["train"]["triggers"][0]
    assert trig["expect"] == ["aceforge.shards.landed"]
    assert trig["match"] == {"prefect.resource.id": "aceforge.shards.*"}
    assert trig["parameters"]["root"] == "{{ event.payload.root }}" and set(trig["parameters"]) == {"shard_uris", "root"}
    from flows.deploy import landed_trigger
    assert trig["parameters"] == landed_trigger().parameters  # the file and `aceforge deploy` agree
    for d in deps.values():
        assert ":" not in d["entrypoint"] and d["work_pool"]["name"] == "aceforge-local"


def test_every_entrypoint_loads_the_real_flow_in_a_fresh_process():
    """As a worker loads them: prefect.yaml's module paths, from the checkout, in a new interpreter."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    code = ("import sys; from prefect.flows import load_flow_from_entrypoint as load; "
            "print(*[load(e).name for e in sys.argv[1:]])")
    entries = [d["entrypoint"] for d in spec["deployments"]]
    res = subprocess.run([sys.executable, "-c", code, *entries], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["aceforge-mine", "aceforge-train"]


def test_no_module_shadows_a_package():
    """A module named like one of our packages would shadow it wherever its folder lands on sys.path."""
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()}
    clashes = [str(m.relative_to(REPO)) for pkg in packages for m in (REPO / pkg).glob("*.py") if m.stem in packages]
    assert clashes == []


@pytest.mark.slow
def test_server_on_another_port_tells_the_ui_its_api_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(BIN / "aceforge"), "server", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # not in its own group
    try:
        base = f"http://127.0.0.1:{port}"
        wait(lambda: json.loads(urllib.request.urlopen(base + "/api/health", timeout=5).read()) is True, 120,
             "the server")
        settings = json.loads(urllib.request.urlopen(base + "/ui-settings", timeout=5).read())
        assert settings["api_url"] == f"{base}/api"
        proc.send_signal(signal.SIGTERM)  # to aceforge only: it must take its `prefect server` child down
        assert proc.wait(timeout=60) is not None

        def closed() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) != 0

        wait(closed, 30, "the port to close")
    finally:
        if proc.poll() is None:
            proc.kill()


def _render(parameters: dict, payload: dict) -> dict:
    """A deployment trigger's parameters as the server renders them for an event (Prefect's own code)."""
    import asyncio
    import uuid
    from datetime import datetime, timezone

    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.automations import Automation, EventTrigger, TriggeredAction
    from prefect.server.events.schemas.events import ReceivedEvent

    now = datetime.now(timezone.utc)
    action = RunDeployment(source="selected", deployment_id=uuid.uuid4(), parameters=parameters)
    automation = Automation(name="t", trigger=EventTrigger(expect={"aceforge.shards.landed"}, posture="Reactive"),
                            actions=[action])
    event = ReceivedEvent(occurred=now, event="aceforge.shards.landed", payload=payload,
                          resource={"prefect.resource.id": "aceforge.shards.mined"}, id=uuid.uuid4())
    fired = TriggeredAction(automation=automation, triggered=now, triggering_labels={}, triggering_event=event,
                            action=action)
    return asyncio.run(action.render_parameters(fired))


def test_the_trigger_passes_every_shard_set_of_the_event_as_a_list():
    from flows.deploy import landed_trigger

    payload = {"shard_uris": ["/r/shards/mined-general_editing", "/r/shards/mined-object_editing"], "root": "/r"}
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = [d["triggers"][0]["parameters"] for d in spec["deployments"] if d["name"] == "train"]
    for params in [landed_trigger().parameters, *declared]:
        assert _render(params, payload) == {"shard_uris": payload["shard_uris"], "root": "/r"}
    assert _render(landed_trigger().parameters, {**payload, "shard_uris": ["/r/shards/one"]})["shard_uris"] == \
        ["/r/shards/one"]
