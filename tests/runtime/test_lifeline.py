"""Children stop within seconds when their parent is told to stop, and die with it when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

# A stand-in for `prefect server start` / a worker: writes its pid, then honours or ignores SIGTERM.
CHILD = """
import os, signal, sys, time
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""

RUN_CHILD = """
import sys
from runtime.lifeline import run_child
sys.exit(run_child([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], grace=float(sys.argv[4])))
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(path: Path, timeout: float = 30) -> int:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


def gone_within(pids: list[int], timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def start_parent(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, start_new_session=True)


@pytest.mark.parametrize("mode", ["honour", "ignore"])
def test_run_child_stops_within_seconds_of_sigterm(tmp_path, mode):
    """SIGTERM to the parent reaches the child at once; a child ignoring it is killed after the grace period."""
    pidfile = tmp_path / "child.pid"
    parent = start_parent(RUN_CHILD, CHILD, str(pidfile), mode, "1")
    try:
        child = wait_for(pidfile)
        time.sleep(0.2)
        t0 = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=90)
        took = time.monotonic() - t0
        assert took < 10, f"the parent took {took:.1f} s to stop"
        assert gone_within([child], 5) == []
    finally:
        parent.kill()
        parent.wait()


def test_run_child_dies_with_a_killed_parent(tmp_path):
    pidfile = tmp_path / "child.pid"
    parent = start_parent(RUN_CHILD, CHILD, str(pidfile), "honour", "1")
    child = wait_for(pidfile)
    try:
        parent.kill()
        parent.wait()
        assert gone_within([child], 10) == [], "the child outlived its SIGKILLed parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


# The parent guards itself, then starts what a library would: a child in its own session that ignores
# SIGTERM (Prefect's temporary server, as far as the parent can tell) and a grandchild whose parent dies
# first (a Ray agent once its raylet is gone).
GUARDED = """
import subprocess, sys, time
from runtime.lifeline import guard
guard(interval=0.2, grace=1)
spawn = ("import subprocess, sys; code = sys.argv[1]; subprocess.Popen([sys.executable, '-c', code, sys.argv[2], "
         "'honour'], start_new_session=True); sys.argv = [sys.argv[0], sys.argv[3], 'ignore']; exec(code)")
subprocess.Popen([sys.executable, "-c", spawn, sys.argv[1], sys.argv[2] + ".grandchild", sys.argv[2]],
                 start_new_session=True)
time.sleep(300)
"""


def test_descendants_die_with_a_killed_guarded_parent(tmp_path):
    pidfile = tmp_path / "child.pid"
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # not the parent's
    parent = start_parent(GUARDED, CHILD, str(pidfile))
    pids = []
    try:
        pids = [wait_for(pidfile), wait_for(tmp_path / "child.pid.grandchild")]
        time.sleep(1)  # the watchdog's next look
        parent.kill()
        parent.wait()
        assert gone_within(pids, 15) == [], "descendants outlived their SIGKILLed parent"
        assert bystander.poll() is None, "the watchdog killed a process its parent did not start"
    finally:
        bystander.kill()
        parent.kill()
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def descendant_pids(pid: int) -> set[int]:
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p} - out
        out |= kids
        todo += kids
    return out


RAY_DRIVER = """
import time
import ray
from runtime.ray_pool import ensure_ray
ensure_ray()
ray.get(ray.remote(lambda: 1).remote())
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.slow
def test_a_local_ray_dies_with_a_killed_driver():
    """Ray's own parent-death check stops its gcs and raylet; its agents lingered a minute or more."""
    parent = subprocess.Popen([sys.executable, "-c", RAY_DRIVER], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    ray_pids: set[int] = set()
    try:
        assert parent.stdout.readline().strip() == "ready"
        time.sleep(2)  # the watchdog's next look
        ray_pids = descendant_pids(parent.pid)
        assert len(ray_pids) >= 4  # gcs, raylet, agents, a worker, the watchdog
        parent.kill()
        parent.wait()
        assert gone_within(sorted(ray_pids), 30) == [], "Ray processes outlived their SIGKILLed driver"
    finally:
        parent.kill()
        for p in ray_pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
