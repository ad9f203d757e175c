"""Child processes that stop when told and die with their parent.

`run_child` runs a command (the Prefect server, a Prefect worker) in its own session, forwards SIGINT/SIGTERM
to it and escalates to SIGKILL; on Linux the child gets SIGTERM if this process dies.

`guard()` covers what other libraries start for us (Prefect's temporary server, a local Ray's agents and
workers): a small watchdog process records this process's descendants every second and, once this process is
gone however it ended, stops those still running (SIGTERM, then SIGKILL). It touches only processes it saw
descend from this one, each identified by pid and start time, so a reused pid is never hit. Linux only (it
reads /proc); elsewhere it does nothing.

This file runs as the watchdog itself (`python -I -S lifeline.py ...`): standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
_WATCHDOG: dict[int, subprocess.Popen] = {}  # pid of the guarded process -> its watchdog


def parent_death_signal(sig: int = signal.SIGTERM):
    """A Popen preexec_fn that has the child receive `sig` when its parent dies (Linux), else None.
    The signal follows the thread that spawned the child: spawn from a thread that lives as long as the
    process (the main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(cmd: list[str], env: dict | None = None, grace: float = 15.0, poll: float = 0.2) -> int:
    """Run `cmd` in its own session until it exits; returns its exit status.

    SIGINT/SIGTERM are forwarded to its process group at once; a group still alive `grace` s later gets the
    signal again (a Prefect worker can ignore the first), and SIGKILL after another `grace` s. Whatever is left
    in the group when the child exits gets SIGTERM. The handler only signals: the wait is this loop's (a wait
    inside the handler would block on the lock of the interrupted wait)."""
    first: list[tuple[int, float]] = []
    group: list[subprocess.Popen] = []

    def forward(signum, frame):
        if not first:
            first.append((signum, time.monotonic()))
        if group:
            _signal_group(group[0].pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=parent_death_signal())
        group.append(child)
        if first:  # a signal that came while the child was starting
            _signal_group(child.pid, first[0][0])
        stage = 0
        while child.poll() is None:
            if first and stage < 2 and time.monotonic() - first[0][1] >= (stage + 1) * grace:
                _signal_group(child.pid, first[0][0] if stage == 0 else signal.SIGKILL)
                stage += 1
            time.sleep(poll)
        return child.returncode
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for child in group:
            if child.poll() is None:  # left by an error of ours: stop it like a forwarded SIGTERM would
                _signal_group(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(child.pid, signal.SIGKILL)
                    child.wait()
            _signal_group(child.pid, signal.SIGTERM)  # the group outlives its leader only through leftovers


# -- the watchdog -------------------------------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else int(fields[19])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _children_by_scan() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid`: pid -> start time."""
    by_scan = None if os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children") else _children_by_scan()
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        for c in (by_scan.get(todo.pop(), []) if by_scan is not None else _children(todo.pop())):
            st = _start_time(c)
            if st is not None and c not in out:
                out[c] = st
                todo.append(c)
    return out


def _sweep(seen: dict[int, int], grace: float) -> None:
    """SIGTERM every recorded process still running (and what it started since), SIGKILL after `grace` s."""
    live = {p: st for p, st in seen.items() if _start_time(p) == st}
    for p in list(live):
        for c, st in descendants(p).items():
            live.setdefault(c, st)
    live.pop(os.getpid(), None)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p, st in live.items():
            if _start_time(p) == st:
                try:
                    os.kill(p, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        end = time.monotonic() + grace
        while time.monotonic() < end and any(_start_time(p) == st for p, st in live.items()):
            time.sleep(0.1)


def _watch(parent: int, parent_start: int, interval: float, grace: float) -> None:
    seen: dict[int, int] = {}
    next_look = 0.0
    while os.getppid() == parent and _start_time(parent) == parent_start:
        if time.monotonic() >= next_look:
            now = descendants(parent)
            now.pop(os.getpid(), None)
            seen = {p: st for p, st in seen.items() if _start_time(p) == st}
            seen.update(now)
            next_look = time.monotonic() + interval
        time.sleep(min(0.25, interval))
    _sweep(seen, grace)


def guard(interval: float = 1.0, grace: float = 5.0) -> subprocess.Popen | None:
    """Start this process's watchdog (once per process; Linux only). Returns it, or None where unsupported."""
    me = os.getpid()
    if me in _WATCHDOG:
        return _WATCHDOG[me]
    start = _start_time(me)
    if start is None or not os.path.exists("/proc/self/task"):
        return None
    dog = subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), str(me), str(start), str(interval), str(grace)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _WATCHDOG[me] = dog
    return dog


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
