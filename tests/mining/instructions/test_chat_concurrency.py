"""Many chat calls in flight: the throughput a served model allows, and the fault guarantees (deadline per
call, circuit breaker, validation before the cache, counts by reason) holding with calls running at once."""

import base64
import io
import json
import time

import pytest
from PIL import Image

from mining.instructions.pool import RateLimiter, ordered_map
from mining.instructions.writers import ChatInstructionWriter, InstructionError
from schemas.records import PairRecord
from stages.pairs.instruct import instruct_pairs, load_instructed
from tests.mining.instructions.stub_endpoint import LatencyEndpoint


@pytest.fixture
def endpoint():
    made = []

    def make(latency, answer=None):
        made.append(LatencyEndpoint(latency, **({"answer": answer} if answer else {})))
        return made[-1]

    yield make
    for e in made:
        e.close()


def _pair(pid):
    return PairRecord(pair_id=pid, source_id="a", target_id="b", task="general_editing", similarity=0.9)


def _png(path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def _cached_files(cache):
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_instruct_pairs_keeps_in_flight_requests_going(endpoint, tmp_path):
    latency, in_flight, n = 0.2, 16, 64
    ep = endpoint(latency)
    catalog = {"a": _png(tmp_path / "a.png"), "b": _png(tmp_path / "b.png")}
    w = ChatInstructionWriter(ep.url, "vlm", str(tmp_path / "cache"), in_flight=in_flight)
    t0 = time.monotonic()
    uri, counts = instruct_pairs([_pair(f"p{i:02d}") for i in range(n)], w, catalog, str(tmp_path / "pairs"))
    elapsed = time.monotonic() - t0
    print(f"{n / elapsed:.1f} requests/s; in_flight / latency = {in_flight / latency:.1f}")
    assert ep.max_active == in_flight  # the server held in_flight requests at once, never more
    assert ep.requests == n and counts["chat_ok"] == n and counts["with_instruction"] == n
    done = load_instructed(uri)
    assert [p.pair_id for p in done] == [f"p{i:02d}" for i in range(n)]  # input order
    assert {p.lineage.generators[-1].name for p in done} == {"chat"}


def _numbered(body: bytes) -> tuple[int, str]:
    """Echoes the number the source image holds: odd ones get a reply that fails validation."""
    urls = [c["image_url"]["url"] for c in json.loads(body)["messages"][1]["content"] if c["type"] == "image_url"]
    k = int(base64.b64decode(urls[0].split(",", 1)[1]))
    if k % 2:
        return 200, json.dumps({"instruction": ["not", "a", "string"]})
    return 200, json.dumps({"instruction": f"Edit {{image}} #{k}."})


def test_write_many_is_in_order_and_caches_only_valid_replies(endpoint, tmp_path):
    ep = endpoint(0.05, _numbered)
    cache = tmp_path / "cache"
    w = ChatInstructionWriter(ep.url, "vlm", str(cache), in_flight=8, breaker_failures=100)
    items = [(_pair(f"p{k}"), str(k).encode(), b"t", "png", "png") for k in range(24)]
    out = list(w.write_many(items))
    for k, r in enumerate(out):
        if k % 2:
            assert isinstance(r, InstructionError) and "bad reply" in str(r)
        else:
            assert r.instruction == f"Edit {{image}} #{k}."
    assert ep.max_active == 8
    assert w.counts["chat_ok"] == 12 and w.counts["chat_failed"] == 12 and w.counts["chat_bad_reply"] == 12
    assert w.counts["chat_requests"] == 24 and len(_cached_files(cache)) == 12  # the bad ones never cached
    again = list(ChatInstructionWriter(ep.url, "vlm", str(cache), in_flight=8).write_many(items[::2]))
    assert [r.instruction for r in again] == [f"Edit {{image}} #{k}." for k in range(0, 24, 2)]
    assert ep.requests == 24  # all from the cache


def test_the_breaker_bounds_the_calls_made_with_many_in_flight(endpoint, tmp_path):
    ep = endpoint(0.02, lambda body: (500, ""))
    catalog = {"a": _png(tmp_path / "a.png"), "b": _png(tmp_path / "b.png")}
    n, in_flight, breaker = 40, 4, 5
    w = ChatInstructionWriter(ep.url, "vlm", str(tmp_path / "cache"), retries=1, backoff_s=0.01,
                              in_flight=in_flight, breaker_failures=breaker)
    _, counts = instruct_pairs([_pair(f"p{i}") for i in range(n)], w, catalog, str(tmp_path / "pairs"))
    # a call starts only while the breaker is closed: the failing ones, and those already running when it opened
    assert breaker <= counts["chat_failed"] <= breaker + in_flight - 1
    assert counts["chat_failed"] + counts["chat_circuit_open"] == n == counts["chat_fallback"]
    assert counts["chat_failed"] == counts["chat_http_500"] + counts.get("chat_abandoned", 0)
    assert ep.requests == counts["chat_requests"] <= (breaker + in_flight - 1) * 2
    assert counts["with_instruction"] == n and _cached_files(tmp_path / "cache") == []


def test_each_call_in_flight_ends_by_its_deadline(endpoint, tmp_path):
    ep = endpoint(30.0)
    w = ChatInstructionWriter(ep.url, "vlm", str(tmp_path / "c"), timeout_s=60, retries=3, deadline_s=0.5,
                              in_flight=8, breaker_failures=100)
    t0 = time.monotonic()
    out = list(w.write_many([(_pair(f"p{i}"), b"s", b"t", "png", "png") for i in range(8)]))
    assert time.monotonic() - t0 < 10  # eight calls of 30 s each without the deadline
    assert all(isinstance(r, InstructionError) and "deadline" in str(r) for r in out)
    assert w.counts["chat_deadline"] == 8 == w.counts["chat_failed"] and ep.max_active == 8


def test_the_rate_limit_spaces_request_starts():
    lim = RateLimiter(50.0)
    t0 = time.monotonic()
    starts = list(ordered_map(lambda _: (lim.wait(), time.monotonic())[1], range(11), in_flight=8))
    assert starts[-1] - t0 >= 10 / 50.0 * 0.99  # the eleventh start waits for ten intervals, however many threads
    assert not RateLimiter(1.0).wait(deadline=time.monotonic() - 1)  # no slot before a spent deadline
    assert RateLimiter(0).wait(deadline=time.monotonic() - 1)  # 0: no limit


def test_the_rate_limit_applies_to_a_writer(endpoint, tmp_path):
    ep = endpoint(0.0)
    w = ChatInstructionWriter(ep.url, "vlm", str(tmp_path / "c"), in_flight=8, requests_per_second=40)
    t0 = time.monotonic()
    out = list(w.write_many([(_pair(f"p{i}"), b"s", b"t", "png", "png") for i in range(9)]))
    assert time.monotonic() - t0 >= 8 / 40 * 0.99 and all(r.instruction == "Edit {image}." for r in out)


def test_ordered_map_bounds_what_it_takes_ahead():
    taken = []

    def items():
        for i in range(100):
            taken.append(i)
            yield i

    it = ordered_map(lambda x: x * 2, items(), in_flight=4)
    assert next(it) == 0 and len(taken) <= 9  # 2 * in_flight submitted, one more pulled to find the window full
    assert list(it) == [2 * i for i in range(1, 100)]
