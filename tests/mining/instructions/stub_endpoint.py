"""A loopback OpenAI-compatible /v1/chat/completions with a fixed latency, counting the requests it holds at
once (the concurrency a client reached). Used by the throughput tests and bench/chat_throughput.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

OK = (200, json.dumps({"caption": "c", "instruction": "Edit {image}."}))


class LatencyEndpoint:
    """Answers every POST after `latency` s by `answer(request body) -> (status, message content)`."""

    def __init__(self, latency: float, answer: Callable[[bytes], tuple[int, str]] = lambda body: OK):
        self.latency, self.answer = latency, answer
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        ep = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with ep._lock:
                    ep.requests += 1
                    ep.active += 1
                    ep.max_active = max(ep.max_active, ep.active)
                try:
                    time.sleep(ep.latency)
                    code, content = ep.answer(body)
                finally:
                    with ep._lock:
                        ep.active -= 1
                out = json.dumps({"choices": [{"message": {"content": content}}]}).encode() if code == 200 \
                    else b"error"
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # a client opening many connections at once is not refused
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
