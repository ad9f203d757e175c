"""Chat instruction throughput against a served model's latency: one request at a time vs many in flight.

    python bench/chat_throughput.py [--pairs 256] [--latency 0.2] [--in-flight 1 4 16 64] [--rounds 3]

A loopback OpenAI-compatible endpoint answers every request after a fixed latency (as a served model does
while it has capacity). For each in_flight, `ChatInstructionWriter.write_many` instructs --pairs pairs (a
fresh reply cache each run: every pair is a request); the figure is requests/s of the best run against
the ideal in_flight / latency, and the largest number of requests the endpoint held at once. The endpoint
runs in a child process (as a served model does; in the client's process its threads would share the
client's interpreter lock). The sides run interleaved (bench/_timing.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import Side, interleave  # noqa: E402
from mining.instructions.writers import ChatInstructionWriter  # noqa: E402
from schemas.records import PairRecord  # noqa: E402
from tests.mining.instructions.stub_endpoint import LatencyEndpoint  # noqa: E402


def _serve(latency: float, conn) -> None:
    """The endpoint, in a child: sends its URL, then answers "peak" (the most held at once since the last
    ask) until "stop"."""
    ep = LatencyEndpoint(latency)
    conn.send(ep.url)
    while (msg := conn.recv()) != "stop":
        if msg == "peak":
            conn.send(ep.max_active)
            ep.max_active = 0
    ep.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    items = [(PairRecord(pair_id=f"p{i}", source_id=f"s{i}", target_id=f"t{i}", task="general_editing",
                         similarity=0.9), f"s{i}".encode(), f"t{i}".encode(), "png", "png") for i in range(a.pairs)]
    conn, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(a.latency, child), daemon=True)
    server.start()
    url = conn.recv()
    peak: dict[int, int] = {}

    def fresh() -> str:
        conn.send("peak")
        conn.recv()
        return tempfile.mkdtemp()

    def side(n: int) -> Side:
        def run(cache: str) -> None:
            w = ChatInstructionWriter(url, "vlm", cache, in_flight=n)
            out = list(w.write_many(items))
            assert w.counts["chat_ok"] == len(out) == a.pairs, dict(w.counts)
            conn.send("peak")
            peak[n] = max(peak.get(n, 0), conn.recv())
        return Side(f"in_flight={n}", run, setup=fresh)

    try:
        t = interleave([side(n) for n in a.in_flight], rounds=a.rounds)
    finally:
        conn.send("stop")
        server.join(10)
    print(f"{a.pairs} pairs, latency {a.latency} s, best of {a.rounds} interleaved rounds")
    print(f"{'in_flight':>9} {'best s':>8} {'req/s':>8} {'ideal':>8} {'ratio':>6} {'held':>5}")
    base = None
    for n in a.in_flight:
        tm = t[f"in_flight={n}"]
        rate = a.pairs / tm.best
        ideal = min(n, a.pairs) / a.latency
        base = base or rate
        print(f"{n:>9} {tm.best:>8.2f} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>6.2f} {peak[n]:>5}"
              f"   ({rate / base:.1f}x the first)")


if __name__ == "__main__":
    main()
