"""One run at a time per root: `<root>/.aceforge.lock`, taken when a run starts and given back when it ends.

Two mining runs on one root used to race the shard writer (one deleted the other's temporary file). The
lock file holds who took it (host, pid, what, since). A second run refuses with one line naming the
holder. A lock left by a process that died on this host (kill -9) is taken over; one from another host
cannot be checked from here, so the message says which file to remove once that run is gone.

Local roots use an exclusive create (atomic). On an object store the check and the write are two calls:
two runs started within the same instant could both pass; the message still names the holder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time

from schemas.layout import LOCK
from store import storage


class RootBusy(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RootLock:
    def __init__(self, root: str, what: str):
        self.uri = storage.join(root, LOCK)
        self.fs, self.path = storage.fs_path(self.uri)
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "what": what,
                   "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.held = False

    def _holder(self) -> dict | None:
        try:
            with self.fs.open(self.path, "rb") as f:
                return json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def _create(self) -> bool:
        data = json.dumps(self.me).encode()
        self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
        if storage.is_local(self.fs):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if self.fs.exists(self.path):
            return False
        storage.atomic_write_bytes(self.uri, data)
        return True

    def acquire(self) -> "RootLock":
        for _ in range(2):
            if self._create():
                self.held = True
                return self
            holder = self._holder()
            if holder is None:
                continue  # given back meanwhile
            dead = holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int) \
                and not _alive(holder["pid"])
            if dead or (holder == {} and self._age() > 60):  # died, or crashed between create and write
                self._take_over()
                continue
            raise RootBusy(f"{storage.parent(self.uri)} is in use by {holder.get('what', 'another run')} "
                           f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
                           f"{holder.get('since', '?')}); wait for it to finish, or remove {self.uri} "
                           f"if that run is gone")
        raise RootBusy(f"could not take {self.uri}: it keeps changing hands")

    def _age(self) -> float:
        try:
            return time.time() - os.stat(self.path).st_mtime if storage.is_local(self.fs) else 0.0
        except FileNotFoundError:
            return 0.0

    def _take_over(self) -> None:
        """Move the dead holder's file aside (atomic: of two runs taking over, one moves it, the other finds
        it gone and competes for a fresh create), then delete it."""
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            if storage.is_local(self.fs):
                os.rename(self.path, aside)
            else:
                self.fs.mv(self.path, aside)
        except FileNotFoundError:
            return
        self.fs.rm(aside)

    def release(self) -> None:
        if self.held and self._holder() == self.me:  # only our own lock
            self.fs.rm(self.path)
        self.held = False

    def __enter__(self) -> "RootLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
