"""The one place Ray starts: a local Ray when none is running and RAY_ADDRESS is not set, else the cluster
RAY_ADDRESS names. Whoever started it stops it; a Ray someone else started is left alone.

Call it from a long-lived thread (the entry point's): a local Ray's processes are tied to the thread that
started them and die when it ends."""

from __future__ import annotations

import os
import threading

import ray

RUNTIME_ENV = {"env_vars": {"HF_HUB_OFFLINE": "1"}}


_STARTED = False
_LOCK = threading.Lock()


def ensure_ray() -> bool:
    """Start Ray unless it runs; True when this call started it."""
    global _STARTED
    with _LOCK:  # units in threads may all ask at once: one init
        if ray.is_initialized():
            return False
        ray.init(address=os.environ.get("RAY_ADDRESS"), runtime_env=RUNTIME_ENV, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        _STARTED = True
        return True


def stop_ray() -> None:
    """Shut down Ray if ensure_ray started it (a Ray someone else started is left alone)."""
    global _STARTED
    if _STARTED and ray.is_initialized():
        ray.shutdown()
    _STARTED = False
