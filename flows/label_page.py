"""The labelling page: a small HTTP server on 127.0.0.1 (the standard library's), one pair at a time.

    GET  /                    the page (keyboard: a accept, r reject, s skip)
    GET  /api/next            progress and the next unlabelled pair (or done)
    GET  /image/<n>/<which>   the source or target image of the queue's n-th pair
    POST /api/label           {"pair_id", "verdict"}: appended to <root>/labels/<task>.parquet

Pairs with a verdict already in the root's labels (any, skip included) are not shown again.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flows.labels import VERDICTS, LabelItem, append_labels, read_labels
from mining.image.decode import normalized_bytes
from store.sources import read_uri

_MIME = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aceforge labels: %(task)s</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
 #pair { display: flex; gap: 1rem; } figure { margin: 0; flex: 1; } figcaption { color: #666; font-size: .85rem; }
 img { max-width: 100%%; max-height: 60vh; border: 1px solid #ccc; }
 #instruction { font-size: 1.1rem; margin: .75rem 0; } #scores { color: #555; font-size: .85rem; }
 kbd { border: 1px solid #999; border-radius: 3px; padding: 0 .3rem; } #progress { font-weight: 600; }
 button { margin-right: .5rem; }
</style></head><body>
<h1>Is this a valid <em>%(task)s</em> pair?</h1>
<p id="progress">loading</p>
<div id="work">
 <p id="instruction"></p>
 <div id="pair"><figure><img id="source" alt="source"><figcaption>source</figcaption></figure>
  <figure><img id="target" alt="target"><figcaption>target</figcaption></figure></div>
 <p id="scores"></p>
 <p><small>pair <code id="pair-id"></code></small></p>
 <p><button data-v="accept"><kbd>a</kbd> accept</button><button data-v="reject"><kbd>r</kbd> reject</button>
  <button data-v="skip"><kbd>s</kbd> skip</button></p>
</div>
<p id="status" role="status"></p>
<script>
let current = null, busy = false;
function show(state) {
  const p = state.progress;
  document.getElementById("progress").textContent =
    `${p.labelled} of ${p.total} pairs labelled (${p.accept} accepted, ${p.reject} rejected, ${p.skip} skipped)`;
  current = state.pair;
  document.getElementById("work").hidden = !current;
  if (!current) { document.getElementById("status").textContent = "done: every pair has a label"; return; }
  document.getElementById("instruction").textContent = current.instruction || "(no instruction)";
  document.getElementById("pair-id").textContent = current.pair_id;
  document.getElementById("source").src = `/image/${state.index}/source`;
  document.getElementById("target").src = `/image/${state.index}/target`;
  document.getElementById("scores").textContent = Object.entries(current.scores)
    .map(([k, v]) => `${k} ${v.toFixed(3)}`).join(" · ");
}
async function load() { show(await (await fetch("/api/next")).json()); }
async function label(verdict) {
  if (!current || busy) return;
  busy = true;
  try {
    const r = await fetch("/api/label", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({pair_id: current.pair_id, verdict})});
    if (!r.ok) { document.getElementById("status").textContent = await r.text(); return; }
    show(await r.json());
  } finally { busy = false; }
}
const keys = {a: "accept", r: "reject", s: "skip"};
document.addEventListener("keydown", e => { if (keys[e.key]) { e.preventDefault(); label(keys[e.key]); } });
document.querySelectorAll("button[data-v]").forEach(b => b.addEventListener("click", () => label(b.dataset.v)));
load();
</script></body></html>
"""


class LabelSession:
    """The queue of one labelling session and its writes (one at a time)."""

    def __init__(self, root: str, task: str, items: list[LabelItem], who: str, max_pixels: int):
        self.root, self.task, self.items, self.who, self.max_pixels = root, task, items, who, max_pixels
        self.lock = threading.Lock()
        self.done: dict[str, str] = {r["pair_id"]: r["verdict"] for r in read_labels(root, task).to_pylist()}
        self.by_id = {it.pair_id: it for it in items}

    def state(self) -> dict:
        shown = [self.done[it.pair_id] for it in self.items if it.pair_id in self.done]
        index = next((k for k, it in enumerate(self.items) if it.pair_id not in self.done), None)
        return {"progress": {"total": len(self.items), "labelled": len(shown),
                             **{v: shown.count(v) for v in VERDICTS}},
                "index": index, "pair": None if index is None else self.items[index].public()}

    def label(self, pair_id: str, verdict: str) -> dict:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        if pair_id not in self.by_id:
            raise KeyError(f"no pair {pair_id} in this session")
        it = self.by_id[pair_id]
        with self.lock:
            append_labels(self.root, self.task, [{"pair_id": pair_id, "source_id": it.source_id,
                                                  "target_id": it.target_id, "verdict": verdict, "who": self.who}])
            self.done[pair_id] = verdict
            return self.state()

    def image(self, index: int, which: str) -> tuple[bytes, str]:
        it = self.items[index]
        if which not in ("source", "target"):
            raise KeyError(which)
        data = it.images.get(which) or read_uri(getattr(it, which))
        data, ext = normalized_bytes(data, max_pixels=self.max_pixels, min_side=1)
        return data, _MIME.get(ext, "application/octet-stream")


def make_server(session: LabelSession, port: int = 0) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1 (port 0: any free port; server.server_address has it)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args) -> None:  # quiet: the command prints its own lines
            return

        def _send(self, code: int, body: bytes, mime: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj: dict, code: int = 200) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self._foreign():
                return self._send(403, b"forbidden: not this page's host", "text/plain")
            parts = self.path.split("?")[0].strip("/").split("/")
            try:
                if parts == [""]:
                    self._send(200, (PAGE % {"task": session.task}).encode(), "text/html; charset=utf-8")
                elif parts == ["api", "next"]:
                    self._json(session.state())
                elif len(parts) == 3 and parts[0] == "image" and parts[1].isdigit():
                    self._send(200, *session.image(int(parts[1]), parts[2]))
                elif parts == ["favicon.ico"]:
                    self._send(204, b"", "image/x-icon")
                else:
                    self._send(404, b"not found", "text/plain")
            except (KeyError, IndexError) as e:
                self._send(404, f"not found: {e}".encode(), "text/plain")

        def _foreign(self) -> bool:
            """A request for another host name (DNS rebinding) or a POST from another page's origin (a site open
            in the same browser) is refused: only this page labels."""
            port = self.server.server_address[1]
            own = {f"127.0.0.1:{port}", f"localhost:{port}"}
            if self.headers.get("Host") not in own:
                return True
            origin = self.headers.get("Origin")
            return self.command == "POST" and origin is not None and origin.split("://", 1)[-1] not in own

        def do_POST(self) -> None:  # noqa: N802
            if self._foreign():
                return self._send(403, b"forbidden: not this page's origin", "text/plain")
            if self.path != "/api/label":
                return self._send(404, b"not found", "text/plain")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._json(session.label(str(body.get("pair_id")), str(body.get("verdict"))))
            except (ValueError, KeyError) as e:
                self._send(400, str(e).encode(), "text/plain")

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)
