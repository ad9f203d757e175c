"""The one place Ray starts: a local Ray when none is running and RAY_ADDRESS is not set, else the cluster
RAY_ADDRESS names (a cluster on this machine that binds loopback is joined on loopback). Whoever started it
stops it; a Ray someone else started is left alone.

Call it from a long-lived thread (the entry point's): a local Ray's processes are tied to the thread that
started them and die when it ends. What they start in turn (agents, workers) is stopped by this process's
watchdog (runtime/lifeline.py) if it dies without shutting Ray down.

A local Ray binds loopback: every one of its servers listens on 127.0.0.1 only. ACEFORGE_RAY_BIND opens it
up: `auto` lets Ray pick the node's address (its servers then listen on every interface), an IP address makes
that the node's address."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading

import ray
import ray._private.ray_constants as ray_constants

RUNTIME_ENV = {"env_vars": {"HF_HUB_OFFLINE": "1"}}


_STARTED = False
_LOCK = threading.Lock()
BIND_ENV = "ACEFORGE_RAY_BIND"
LOOPBACK = "127.0.0.1"


def local_bind() -> str | None:
    """The node address of a Ray this process starts: loopback unless ACEFORGE_RAY_BIND says otherwise
    (None: Ray's own choice)."""
    raw = os.environ.get(BIND_ENV, "")
    value = raw.strip().lower()
    if value in ("", "loopback", "localhost"):
        return LOOPBACK
    if value == "auto":
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{BIND_ENV}={raw!r}: expected loopback (the default), auto, or an IP address") from None
    return LOOPBACK if ip.is_loopback else str(ip)


def _joins_loopback(address: str) -> bool:
    """RAY_ADDRESS names a cluster on loopback (`127.0.0.1:6379`, `ray://localhost:10001`)."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _loopback_node():
    """ray.init turns a loopback node address into the routed one; on Linux it keeps loopback only in the
    single-machine mode it uses on macOS and Windows (ENABLE_RAY_CLUSTER off), and then binds every server
    of the node to loopback. Off for the start only: a started node answers with its own address."""
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def ensure_ray() -> bool:
    """Start Ray unless it runs; True when this call started it."""
    global _STARTED
    with _LOCK:  # items in threads may all ask at once: one init
        if ray.is_initialized():
            return False
        from runtime.lifeline import guard

        # no RAY_ADDRESS: a new local instance ("local"), never a cluster found running on this machine (another
        # user's `ray start`, another run's); RAY_ADDRESS=auto joins the running one, host:port a named one
        address = os.environ.get("RAY_ADDRESS") or "local"
        bind = local_bind() if address == "local" else (LOOPBACK if _joins_loopback(address) else None)
        guard()  # a local Ray's agents and workers go with this process, however it ends
        kwargs = dict(address=address, runtime_env=RUNTIME_ENV, include_dashboard=False, log_to_driver=False,
                      ignore_reinit_error=True)
        if bind == LOOPBACK:
            with _loopback_node():
                ray.init(**kwargs)
        else:
            ray.init(**kwargs, **({"_node_ip_address": bind} if bind else {}))
        _STARTED = True
        return True


def stop_ray() -> None:
    """Shut down Ray if ensure_ray started it (a Ray someone else started is left alone)."""
    global _STARTED
    if _STARTED and ray.is_initialized():
        ray.shutdown()
    _STARTED = False
