"""The chat endpoint misbehaving: a trickled body, 500s, malformed and undecodable replies, huge instructions.
A loopback server plays the endpoint; every call ends within its deadline, falls back to templates, is
counted, and nothing bad lands in the reply cache."""

import io
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mining.instructions.writers import ChatInstructionWriter, InstructionError
from schemas.records import PairRecord
from stages.pairs.instruct import instruct_pairs


def _closed(sock: socket.socket, wait: float) -> bool:
    """True when the peer closed `sock` (readable with nothing to read), waiting at most `wait` s."""
    r, _, _ = select.select([sock], [], [], wait)
    if not r:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Endpoint:
    """A loopback chat endpoint answering each POST by the next step of `script` (then `then`, forever):
    ("trickle", interval): 200, then a chunked body one byte every `interval` s for up to 20 s;
    ("hold", s): the `then` reply after s seconds; ("status", code); ("content", str): that message content; ("raw", bytes): that body; ("ok", dict)."""

    def __init__(self, script, then=("ok", {"caption": "c", "instruction": "Fixed {image}."})):
        self.script, self.then = list(script), then
        self.requests = 0
        self.closed_after: list[float] = []  # seconds from the headers to the client closing, per trickle
        ep = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                ep.requests += 1
                kind, arg = ep.script.pop(0) if ep.script else ep.then
                if kind == "trickle":
                    return self._trickle(arg)
                if kind == "hold":
                    time.sleep(arg)
                    kind, arg = ep.then
                if kind == "status":
                    body, code = b"error", arg
                elif kind == "raw":
                    body, code = arg, 200
                else:
                    content = arg if kind == "content" else json.dumps(arg)
                    body, code = json.dumps({"choices": [{"message": {"content": content}}]}).encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _trickle(self, interval):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                t0 = time.monotonic()
                self.close_connection = True
                while time.monotonic() - t0 < 20:
                    if _closed(self.connection, interval):
                        ep.closed_after.append(time.monotonic() - t0)
                        return
                    try:
                        self.wfile.write(b"1\r\n \r\n")
                        self.wfile.flush()
                    except OSError:
                        ep.closed_after.append(time.monotonic() - t0)
                        return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None  # a client that hung up mid-reply is the point here
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = []

    def make(script, **kw):
        made.append(Endpoint(script, **kw))
        return made[-1]

    yield make
    for e in made:
        e.close()


def _pair(pid="p1"):
    return PairRecord(pair_id=pid, source_id="a", target_id="b", task="general_editing", similarity=0.9)


def _cached_files(cache):
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_a_trickled_body_ends_at_the_deadline_and_the_socket_is_closed(endpoint, tmp_path):
    ep = endpoint([("trickle", 0.25)] * 4)
    w = ChatInstructionWriter(ep.url, "vlm", tmp_path / "c", timeout_s=5, retries=3, backoff_s=0.01,
                              deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(InstructionError, match="deadline"):
        w.write(_pair(), b"s", b"t")
    assert time.monotonic() - t0 < 5  # a per-read timeout alone never fires on a trickle: 20 s per attempt
    assert w.counts["chat_failed"] == 1 and w.counts["chat_deadline"] == 1
    deadline = time.monotonic() + 5
    while not ep.closed_after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ep.closed_after and ep.closed_after[0] < 3  # the server saw the connection closed
    assert _cached_files(tmp_path / "c") == []


def test_close_abandons_a_call_in_flight_and_closes_its_socket(endpoint, tmp_path):
    ep = endpoint([("trickle", 0.1)])
    w = ChatInstructionWriter(ep.url, "vlm", tmp_path / "c", timeout_s=30, retries=0, deadline_s=30)
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(InstructionError, w.write, _pair(), b"s", b"t")))
    t.start()
    while ep.requests == 0:
        time.sleep(0.02)
    time.sleep(0.3)
    w.close()
    t.join(5)
    assert not t.is_alive() and errors  # the call ended with an InstructionError, not after 30 s
    deadline = time.monotonic() + 5
    while not ep.closed_after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ep.closed_after and ep.closed_after[0] < 5
    with pytest.raises(InstructionError, match="closed"):  # a closed writer calls no more
        w.write(_pair("p2"), b"s", b"t")
    assert ep.requests == 1


def _png(path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def test_the_breaker_stops_calling_a_failing_endpoint_and_pairs_fall_back_to_templates(endpoint, tmp_path):
    ep = endpoint([], then=("status", 500))
    catalog = {"a": _png(tmp_path / "a.png"), "b": _png(tmp_path / "b.png")}
    pairs = [_pair(f"p{i}") for i in range(9)]
    w = ChatInstructionWriter(ep.url, "vlm", str(tmp_path / "cache"), retries=1, backoff_s=0.01)
    assert w.breaker_failures == 5
    uri, counts = instruct_pairs(pairs, w, catalog, str(tmp_path / "pairs"))
    assert ep.requests == 5 * 2  # five failed calls of two attempts each; then none reach the server
    assert counts["chat_failed"] == 5 and counts["chat_circuit_open"] == 4
    assert counts["chat_fallback"] == 9 and counts["with_instruction"] == 9  # in = kept + fallen back
    assert counts.get("without_instruction", 0) == 0
    from stages.pairs.instruct import load_instructed

    done = load_instructed(uri)
    assert {p.lineage.generators[-1].name for p in done} == {"template"}  # never named as the chat's


@pytest.mark.parametrize("bad", [("content", "[1,2,3]"), ("raw", b"\xff\xfe{\x00}\x00"),
                                 ("content", '{"instruction": 5}'), ("content", "not json")])
def test_a_bad_reply_is_a_counted_failure_never_cached_and_a_fixed_endpoint_is_used(endpoint, tmp_path, bad):
    ep = endpoint([bad])
    cache = tmp_path / "cache"
    w = ChatInstructionWriter(ep.url, "vlm", str(cache), retries=2, backoff_s=0.01)
    with pytest.raises(InstructionError, match="bad reply"):
        w.write(_pair(), b"s", b"t")
    assert w.counts["chat_bad_reply"] == 1 and w.counts["chat_failed"] == 1
    assert ep.requests == 1 and _cached_files(cache) == []  # not retried, not cached
    ins = ChatInstructionWriter(ep.url, "vlm", str(cache)).write(_pair(), b"s", b"t")  # the endpoint, fixed
    assert ins.instruction == "Fixed {image}." and ep.requests == 2 and len(_cached_files(cache)) == 1


def test_a_bad_reply_cached_by_an_older_version_is_a_miss(endpoint, tmp_path):
    ep = endpoint([])
    cache = tmp_path / "cache"
    w = ChatInstructionWriter(ep.url, "vlm", str(cache))
    key = w._cache_key("p1", b"s", b"t", "png", "png")
    poisoned = cache / key[:2] / f"{key}.json"
    poisoned.parent.mkdir(parents=True)
    poisoned.write_text("[1, 2, 3]")
    ins = w.write(_pair(), b"s", b"t")
    assert ins.instruction == "Fixed {image}." and ep.requests == 1 and w.counts["chat_cache_invalid"] == 1
    assert json.loads(poisoned.read_text())["instruction"] == "Fixed {image}."  # replaced by the good reply


def test_an_instruction_over_the_cap_is_a_counted_fallback_and_not_cached(endpoint, tmp_path):
    huge = "Paint it red in {image}. " + "x" * 10_000_000
    ep = endpoint([("ok", {"instruction": huge}), ("ok", {"instruction": "Make {image} " + "very " * 120 + "red."}),
                   ("ok", {"instruction": "Make {image} " + "very " * 90 + "red."})])
    cache = tmp_path / "cache"
    w = ChatInstructionWriter(ep.url, "vlm", str(cache))
    assert w.max_chars == 500
    for pid in ("p1", "p2"):
        with pytest.raises(InstructionError, match="too long"):
            w.write(_pair(pid), b"s", b"t")
    assert w.counts["chat_too_long"] == 2 and _cached_files(cache) == []
    ok = w.write(_pair("p3"), b"s", b"t")  # 468 characters: kept whole
    assert ok.instruction.endswith("very red.") and len(ok.instruction) <= 500


def test_retries_share_the_deadline(endpoint, tmp_path):
    ep = endpoint([("hold", 1.0)] * 10)
    w = ChatInstructionWriter(ep.url, "vlm", tmp_path / "c", timeout_s=0.5, retries=9, backoff_s=0.01,
                              deadline_s=1.2)
    t0 = time.monotonic()
    with pytest.raises(InstructionError, match="deadline"):
        w.write(_pair(), b"s", b"t")
    assert time.monotonic() - t0 < 4 and ep.requests <= 3  # ten attempts of 0.5 s each without a shared budget
