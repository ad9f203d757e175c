"""One HTTP POST that ends by a deadline, whatever the server does.

A socket timeout bounds each read, not a call: a server that trickles a chunked body one byte at a time
never trips it. Here a timer shuts the socket down at the deadline (a blocked read then returns at once),
the body is read a piece at a time with the deadline checked between pieces, and the connection is closed
when the call ends for any reason (an exception, a cancel, `Aborter.abort` from another thread).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse


class DeadlineExceeded(TimeoutError):
    pass


class BodyTooLarge(ValueError):
    pass


class Aborted(ConnectionError):
    pass


class HTTPStatusError(Exception):
    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}")
        self.status, self.body = status, body


def _shutdown(conn: http.client.HTTPConnection) -> None:
    """Unblocks a read in another thread; the owner of `conn` closes it."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Aborter:
    """The connections in flight, so that another thread can end them all (and refuse new ones)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: set[http.client.HTTPConnection] = set()
        self.aborted = False

    def add(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if self.aborted:
                raise Aborted("the client was closed")
            self._conns.add(conn)

    def discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            conns = list(self._conns)
        for c in conns:
            _shutdown(c)


def post(url: str, body: bytes, headers: dict[str, str], *, deadline: float, timeout_s: float,
         max_bytes: int, aborter: Aborter | None = None) -> bytes:
    """The body of a 2xx answer to POST `body` to `url`. `deadline` is a time.monotonic() value; each
    socket operation also times out after `timeout_s`. Raises DeadlineExceeded, BodyTooLarge (more than
    `max_bytes`), HTTPStatusError (not 2xx; its body capped at 200 bytes), Aborted, OSError or
    http.client.HTTPException."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded(f"no time left for {url}")
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=min(timeout_s, remaining))
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    timer = threading.Timer(remaining, _shutdown, (conn,))
    timer.daemon = True
    if aborter is not None:
        aborter.add(conn)
    timer.start()
    try:
        conn.request("POST", path or "/", body, headers)
        resp = conn.getresponse()
        data, n = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"{url} sent no whole reply by the deadline")
            if conn.sock is not None:
                conn.sock.settimeout(min(timeout_s, left))
            piece = resp.read1(65536)
            if not piece:
                break
            n += len(piece)
            if n > max_bytes:
                raise BodyTooLarge(f"reply too long: {url} sent over {max_bytes} bytes")
            data.append(piece)
        if time.monotonic() >= deadline:  # the timer may have cut the body short
            raise DeadlineExceeded(f"{url} sent no whole reply by the deadline")
        if aborter is not None and aborter.aborted:
            raise Aborted("the client was closed")
        if not 200 <= resp.status < 300:
            raise HTTPStatusError(resp.status, b"".join(data)[:200])
        return b"".join(data)
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, (DeadlineExceeded, BodyTooLarge, Aborted)):
            raise
        if aborter is not None and aborter.aborted:
            raise Aborted("the client was closed") from None
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"{url} sent no whole reply by the deadline") from None
        raise
    finally:
        timer.cancel()
        _shutdown(conn)
        conn.close()
        if aborter is not None:
            aborter.discard(conn)
