"""Environment defaults that must be in place before Prefect or Ray is imported (see STACK.md)."""

from __future__ import annotations

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # nothing is fetched from a model hub at run time
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # avoids "database is locked" on a fresh server
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # a fresh temporary server needs ~20 s here
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


SET_HERE: set[str] = set()  # the defaults apply() put in place (the user had not set them)


def apply() -> None:
    for k, v in DEFAULTS.items():
        if k not in os.environ:
            SET_HERE.add(k)
        os.environ.setdefault(k, v)
