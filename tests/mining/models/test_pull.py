"""`models pull` against a fake Hugging Face Hub on a loopback HTTP server (HF_ENDPOINT): download, licence and
size shown first, a dropped connection resumed with a Range request, a corrupted file refused and removed, an
authors' URL resumed from an earlier `.part`, and files it did not write left alone."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mining.models import pull as P

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serves `/{repo}/resolve/{revision}/{file}` like the Hub (ETag = the LFS sha256 of what it *should* serve)
    and `/files/{name}` like a plain web server; honours Range; can drop the first GET of a path halfway and
    serve corrupted bytes in place of the advertised ones. Logs (method, path, Range header)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.etag: dict[str, str] = {}
        self.corrupt: set[str] = set()
        self.drop_first: set[str] = set()
        self.log: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _find(self):
                path = self.path.split("?")[0]
                hub.log.append((self.command, path, self.headers.get("Range")))
                if path not in hub.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None, None
                data = hub.files[path]
                if path in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                return path, data

            def _common(self, path, n):
                if "/resolve/" in path:
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{hub.etag[path]}"')
                self.send_header("Accept-Ranges", "bytes")

            def do_HEAD(self):
                path, data = self._find()
                if path is None:
                    return
                self.send_response(200)
                self._common(path, len(data))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def do_GET(self):
                path, data = self._find()
                if path is None:
                    return
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                self._common(path, len(data))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in hub.drop_first and not rng:
                    hub.drop_first.discard(path)
                    self.wfile.write(body[: len(body) // 2])  # then the connection closes mid-body
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add_hub(self, repo: str, filename: str, data: bytes, lfs: bool = True) -> str:
        path = f"/{repo}/resolve/main/{filename}"
        self.files[path] = data
        self.etag[path] = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(data).hexdigest()
        return path

    def add_url(self, name: str, data: bytes) -> str:
        self.files[f"/files/{name}"] = data
        return f"{self.url}/files/{name}"


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    h = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield h
    h.server.shutdown()


def _weights(n: int = 300_000, seed: int = 1) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _model(files, name="toy", licence="Apache-2.0"):
    return {name: P.Pullable(name, "a toy model", licence, tuple(files))}


def test_pull_from_the_hub_shows_licence_and_size_then_places_and_records_the_file(hub, tmp_path):
    data = _weights()
    hub.add_hub("org/toy", "model.safetensors", data)
    hub.add_hub("org/toy", "config.json", b'{"a": 1}', lfs=False)
    models = _model([P.RemoteFile("toy/model.safetensors", repo="org/toy", filename="model.safetensors"),
                     P.RemoteFile("toy/config.json", repo="org/toy", filename="config.json")])
    said: list[str] = []
    res = P.pull(tmp_path, ["toy"], say=said.append, models=models)
    assert (tmp_path / "toy" / "model.safetensors").read_bytes() == data
    assert (tmp_path / "toy" / "config.json").read_bytes() == b'{"a": 1}'
    shown = "\n".join(said)
    assert "licence Apache-2.0" in shown and "293.0 KB" in shown and COMMIT[:12] in shown
    # the first line about the weights comes before anything is fetched: the licence is shown first
    first = next(i for i, (m, p, _) in enumerate(hub.log) if m == "GET")
    assert hub.log[0][0] == "HEAD" and first > 0
    assert [r.verified for r in res] == ["the Hub's LFS sha256", "none published: digest recorded"]
    manifest = P.read_manifest(tmp_path)
    assert manifest["toy/model.safetensors"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["toy/model.safetensors"]["commit"] == COMMIT
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pull-")]  # staging removed
    # a second pull downloads nothing
    n_get = sum(m == "GET" for m, _, _ in hub.log)
    again = P.pull(tmp_path, ["toy"], say=said.append, models=models)
    assert [r.state for r in again] == ["present", "present"]
    assert sum(m == "GET" for m, _, _ in hub.log) == n_get


def test_a_download_cut_halfway_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): smaller ones stand for
    # a file of many chunks, so that the cut falls after some were written
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    data = _weights(400_000, seed=2)
    path = hub.add_hub("org/toy", "model.safetensors", data)
    hub.drop_first.add(path)
    models = _model([P.RemoteFile("toy/model.safetensors", repo="org/toy", filename="model.safetensors")])
    P.pull(tmp_path, ["toy"], say=lambda s: None, models=models)
    ranges = [r for m, p, r in hub.log if m == "GET" and p == path and r]
    assert ranges and int(ranges[0].split("=")[1].rstrip("-")) > 0
    assert (tmp_path / "toy" / "model.safetensors").read_bytes() == data


def test_a_corrupted_download_is_refused_and_only_its_own_file_removed(hub, tmp_path):
    data = _weights()
    path = hub.add_hub("org/toy", "model.safetensors", data)
    hub.corrupt.add(path)
    mine = tmp_path / "toy" / "notes.txt"  # a file the user put there
    mine.parent.mkdir()
    mine.write_text("keep me")
    models = _model([P.RemoteFile("toy/model.safetensors", repo="org/toy", filename="model.safetensors")])
    with pytest.raises(P.ChecksumMismatch, match="not the Hub's LFS oid"):
        P.pull(tmp_path, ["toy"], say=lambda s: None, models=models)
    assert not (tmp_path / "toy" / "model.safetensors").exists()
    assert mine.read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pull-")]
    assert "toy/model.safetensors" not in P.read_manifest(tmp_path)


def test_a_pinned_sha256_that_the_hub_contradicts_is_refused_before_downloading(hub, tmp_path):
    hub.add_hub("org/toy", "model.safetensors", _weights())
    models = _model([P.RemoteFile("toy/model.safetensors", repo="org/toy", filename="model.safetensors",
                                  sha256="0" * 64)])
    with pytest.raises(P.ChecksumMismatch, match="not the pinned"):
        P.pull(tmp_path, ["toy"], say=lambda s: None, models=models)
    assert not any(m == "GET" for m, _, _ in hub.log)


def test_an_authors_url_resumes_an_earlier_part_and_checks_the_published_md5(hub, tmp_path):
    data = _weights(250_000, seed=3)
    url = hub.add_url("big.pt", data)
    rf = P.RemoteFile("toy/big.pt", url=url, md5=hashlib.md5(data).hexdigest())
    part = tmp_path / "toy" / "big.pt.part"
    part.parent.mkdir()
    part.write_bytes(data[:100_000])  # an earlier pull was interrupted here
    said: list[str] = []
    res = P.pull(tmp_path, ["toy"], say=said.append, models=_model([rf]))
    assert ("GET", "/files/big.pt", "bytes=100000-") in hub.log
    assert (tmp_path / "toy" / "big.pt").read_bytes() == data and not part.exists()
    assert res[0].verified == "published md5" and any("resuming" in s for s in said)


def test_a_url_download_with_the_wrong_md5_is_refused_and_its_part_removed(hub, tmp_path):
    data = _weights(50_000, seed=4)
    url = hub.add_url("big.pt", data)
    rf = P.RemoteFile("toy/big.pt", url=url, md5="f" * 32)
    with pytest.raises(P.ChecksumMismatch, match="not the published"):
        P.pull(tmp_path, ["toy"], say=lambda s: None, models=_model([rf]))
    assert not (tmp_path / "toy" / "big.pt").exists() and not (tmp_path / "toy" / "big.pt.part").exists()


def test_a_present_file_with_other_bytes_is_refused_and_kept(hub, tmp_path):
    data = _weights(10_000)
    url = hub.add_url("big.pt", data)
    dest = tmp_path / "toy" / "big.pt"
    dest.parent.mkdir()
    dest.write_bytes(b"something else")
    rf = P.RemoteFile("toy/big.pt", url=url, md5=hashlib.md5(data).hexdigest())
    with pytest.raises(P.ChecksumMismatch, match="move it away"):
        P.pull(tmp_path, ["toy"], say=lambda s: None, models=_model([rf]))
    assert dest.read_bytes() == b"something else"


def test_offline_mode_and_unknown_names_are_one_line_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        P.pull(tmp_path, ["siglip"], say=lambda s: None)
    with pytest.raises(KeyError, match="unknown model nope"):
        P.pull(tmp_path, ["nope"], say=lambda s: None)


def test_cli_models_pull_fetches_hed_from_the_fake_hub(hub, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    data = _weights(20_000, seed=5)
    hub.add_hub("lllyasviel/Annotators", "ControlNetHED.pth", data)
    res = CliRunner().invoke(app, ["models", "pull", "hed"], env={"ACEFORGE_MODELS": str(tmp_path),
                                                                 "HF_ENDPOINT": hub.url})
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hed" / "ControlNetHED.pth").read_bytes() == data
    assert "licence Apache-2.0" in res.output and "19.5 KB" in res.output
    assert "synthesis.maps.hed_sha256" in res.output and hashlib.sha256(data).hexdigest() in res.output
    gone = CliRunner().invoke(app, ["models", "pull", "depth-anything-v2-small"],
                              env={"ACEFORGE_MODELS": str(tmp_path), "HF_ENDPOINT": hub.url})  # not on this hub
    assert gone.exit_code == 1 and "cannot reach hf://depth-anything/Depth-Anything-V2-Small-hf@main/config.json" in gone.output
    bad = CliRunner().invoke(app, ["models", "pull", "nope"], env={"ACEFORGE_MODELS": str(tmp_path)})
    assert bad.exit_code == 1 and "unknown model nope" in bad.output
    listed = CliRunner().invoke(app, ["models", "pull", "--list"])
    assert "hf://timm/ViT-B-16-SigLIP@main/open_clip_model.safetensors" in listed.output
    assert json.loads((tmp_path / P.MANIFEST).read_text())["hed/ControlNetHED.pth"]["licence"].startswith("Apache")


def test_cli_pull_goes_online_unless_the_user_set_hf_hub_offline(hub, tmp_path, monkeypatch):
    """The CLI sets HF_HUB_OFFLINE=1 by default (nothing fetched at run time); `models pull` is the explicit
    fetch and lifts that default, but an HF_HUB_OFFLINE the user set stands: a one-line error."""
    import huggingface_hub.constants
    from typer.testing import CliRunner

    from flows import settings
    from flows.cli import app

    hub.add_hub("lllyasviel/Annotators", "ControlNetHED.pth", _weights(5_000, seed=6))
    env = {"ACEFORGE_MODELS": str(tmp_path), "HF_ENDPOINT": hub.url}
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(settings, "SET_HERE", set())  # the user's own HF_HUB_OFFLINE=1
    res = CliRunner().invoke(app, ["models", "pull", "hed"], env=env)
    assert res.exit_code == 1 and "HF_HUB_OFFLINE is set" in res.output
    assert not (tmp_path / "hed" / "ControlNetHED.pth").exists()
    monkeypatch.setattr(settings, "SET_HERE", {"HF_HUB_OFFLINE"})  # only the CLI's default
    res = CliRunner().invoke(app, ["models", "pull", "hed"], env=env)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hed" / "ControlNetHED.pth").is_file()
