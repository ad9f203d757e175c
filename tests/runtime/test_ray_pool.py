import os
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ray_is_stopped_only_by_whoever_started_it():
    import ray

    from runtime.ray_pool import ensure_ray, stop_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray()
    assert ray.is_initialized()
    stop_ray()
    assert not ray.is_initialized()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # someone else's Ray
    try:
        ensure_ray()
        stop_ray()
        assert ray.is_initialized()
    finally:
        ray.shutdown()


def test_a_local_ray_binds_loopback_unless_asked(monkeypatch):
    from runtime.ray_pool import BIND_ENV, LOOPBACK, local_bind

    for value in (None, "", "loopback", "localhost", "127.0.0.1", "::1"):
        if value is None:
            monkeypatch.delenv(BIND_ENV, raising=False)
        else:
            monkeypatch.setenv(BIND_ENV, value)
        assert local_bind() == LOOPBACK
    monkeypatch.setenv(BIND_ENV, "auto")
    assert local_bind() is None
    monkeypatch.setenv(BIND_ENV, "10.1.2.3")
    assert local_bind() == "10.1.2.3"
    monkeypatch.setenv(BIND_ENV, "everywhere")
    with pytest.raises(ValueError, match=BIND_ENV):
        local_bind()


def test_without_ray_address_a_new_local_instance_starts_and_auto_joins_the_running_one(monkeypatch):
    import ray

    from runtime import ray_pool

    seen = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(kw))
    monkeypatch.setattr("runtime.lifeline.guard", lambda: None)
    monkeypatch.delenv(ray_pool.BIND_ENV, raising=False)
    for env, address in ((None, "local"), ("", "local"), ("auto", "auto"), ("10.0.0.5:6379", "10.0.0.5:6379")):
        if env is None:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        else:
            monkeypatch.setenv("RAY_ADDRESS", env)
        assert ray_pool.ensure_ray()
        assert seen[-1]["address"] == address  # Ray's "local" never joins a cluster it finds running
    monkeypatch.setattr(ray_pool, "_STARTED", False)


def test_a_cluster_named_on_loopback_is_joined_on_loopback():
    from runtime.ray_pool import _joins_loopback

    for address in ("127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:10001", "[::1]:6379"):
        assert _joins_loopback(address), address
    for address in ("auto", "10.0.0.5:6379", "ray://head.example:10001", "ray-head:6379"):
        assert not _joins_loopback(address), address


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, pid) of every listening TCP socket the processes own."""
    import ipaddress

    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in owner:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(f[1].split(":")[0])
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
            out.append((str(ipaddress.ip_address(raw)), owner[f[9]]))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_a_local_ray_listens_on_loopback_only(monkeypatch):
    import ipaddress

    import ray

    from runtime.ray_pool import BIND_ENV, ensure_ray, stop_ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(BIND_ENV, raising=False)
    assert ensure_ray()
    try:
        ray.get(ray.remote(lambda: 1).remote())  # a worker too
        sockets = _listening({os.getpid()} | _descendants(os.getpid()))  # the driver, gcs, raylet, agents, workers
        assert len(sockets) >= 5

        def loopback(address: str) -> bool:
            ip = ipaddress.ip_address(address)
            return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)

        assert [s for s in sockets if not loopback(s[0])] == []
    finally:
        stop_ray()


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = {int(c) for c in task.read_text().split()} - out
            except OSError:
                continue
            out |= kids
            todo += kids
    return out
