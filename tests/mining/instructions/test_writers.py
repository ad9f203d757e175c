import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mining.instructions.writers import ChatInstructionWriter, InstructionError, KnownTransformWriter
from schemas.records import PairRecord


class Stub:
    """A local OpenAI-compatible chat endpoint with a scripted sequence of behaviours."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                kind, payload = stub.script.pop(0) if stub.script else ("ok", {"instruction": "x {image}"})
                if kind == "sleep":
                    time.sleep(payload)
                    kind, payload = "ok", {"instruction": "late {image}"}
                if kind == "status":
                    self.send_response(payload)
                    self.end_headers()
                    self.wfile.write(b"error")
                    return
                reply = {"choices": [{"message": {"content": json.dumps(payload)}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    made = []

    def make(script):
        s = Stub(script)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _pair(pid="p1"):
    return PairRecord(pair_id=pid, source_id="a", target_id="b", task="general_editing", similarity=0.9)


def test_writes_retries_and_caches(stub, tmp_path):
    ok = ("ok", {"caption": "a red car", "instruction": "Paint the car in {image} red."})
    s = stub([("status", 500), ok, ok, ok])
    w = ChatInstructionWriter(s.url, "vlm", tmp_path / "cache", retries=2, backoff_s=0.01)
    ins = w.write(_pair(), b"src", b"tgt", "jpg", "png")
    assert ins.instruction == "Paint the car in {image} red." and ins.caption == "a red car"
    assert ins.writer == "chat:vlm" and len(s.requests) == 2
    content = s.requests[-1]["messages"][1]["content"]
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert content[2]["image_url"]["url"].startswith("data:image/png;base64,")
    again = ChatInstructionWriter(s.url, "vlm", tmp_path / "cache").write(_pair(), b"src", b"tgt", "jpg", "png")
    assert again == ins and len(s.requests) == 2  # served from the cache
    # another model, or other image bytes for the same pair: asked again, never an old reply
    ChatInstructionWriter(s.url, "vlm-2", tmp_path / "cache").write(_pair(), b"src", b"tgt", "jpg", "png")
    assert len(s.requests) == 3 and s.requests[-1]["model"] == "vlm-2"
    w.write(_pair(), b"src, re-encoded", b"tgt", "jpg", "png")
    assert len(s.requests) == 4


def test_client_errors_fail_fast_and_timeouts_exhaust_retries(stub, tmp_path):
    s = stub([("status", 400)])
    w = ChatInstructionWriter(s.url, "vlm", tmp_path / "c1", retries=3, backoff_s=0.01)
    with pytest.raises(InstructionError, match="answered 400"):
        w.write(_pair(), b"s", b"t")
    assert len(s.requests) == 1
    slow = stub([("sleep", 1.0)] * 3)
    w = ChatInstructionWriter(slow.url, "vlm", tmp_path / "c2", retries=1, timeout_s=0.2, backoff_s=0.01)
    with pytest.raises(InstructionError, match="after 2 attempts"):
        w.write(_pair(), b"s", b"t")


def test_unrelated_pair_gets_no_instruction_and_missing_indicator_is_added(stub, tmp_path):
    s = stub([("ok", {"caption": None, "instruction": None}), ("ok", {"instruction": "Make it night"})])
    w = ChatInstructionWriter(s.url, "vlm", tmp_path / "c", backoff_s=0.01)
    assert w.write(_pair("u"), b"s", b"t") is None
    assert w.write(_pair("v"), b"s", b"t").instruction == "Make it night in {image}."


def test_known_transform_writer_orients_the_pair():
    w = KnownTransformWriter({("a", "b"): "Mirror {image}."})
    assert w.write(_pair()).instruction == "Mirror {image}." and not w.write(_pair()).swapped
    rev = PairRecord(pair_id="r", source_id="b", target_id="a", task="general_editing", similarity=0.9)
    assert w.write(rev).swapped
    other = PairRecord(pair_id="o", source_id="a", target_id="c", task="general_editing", similarity=0.9)
    assert w.write(other) is None


def test_template_writer_is_deterministic_generic_and_named():
    from mining.instructions.writers import TEMPLATES, TemplateInstructionWriter
    from schemas.records import PairRecord

    w = TemplateInstructionWriter()
    pairs = [PairRecord(pair_id=f"p{i}", source_id="a", target_id="b", task="general_editing", similarity=0.9)
             for i in range(20)]
    got = [w.write(p) for p in pairs]
    assert [g.instruction for g in got] == [w.write(p).instruction for p in pairs]  # same pair, same phrasing
    assert {g.instruction for g in got} <= set(TEMPLATES["general_editing"]) and len({g.instruction for g in got}) > 1
    assert all("{image}" in g.instruction and g.writer == "template:1" and g.caption is None for g in got)
