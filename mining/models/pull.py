"""`aceforge models pull`: fetch model files from where their authors publish them, verify, place them.

Each pullable model names its source: a Hugging Face Hub repository, revision and file (downloaded with
`huggingface_hub.hf_hub_download`, which honours `HF_ENDPOINT` for a mirror), or the URL its authors publish
(a resumable HTTP GET: an interrupted download leaves `<file>.part`, which the next pull continues with a Range
request). Before downloading, the size and licence are shown. After it, the file is checked:
- against the digest pinned here where one is published (SAM's md5 is part of its file name; big-lama's md5
  is the one lama-cleaner publishes);
- else against the sha256 the Hub reports for the file (a Git LFS file's ETag is its LFS oid, a sha256), at the
  revision it resolved;
- else (a small non-LFS file, or a URL without a published digest) nothing published pins it: the digest it
  got is recorded and said so.
A mismatch is refused and the downloaded file (only that one) removed. What pull placed is recorded in
`<models_dir>/pulled.json` (source, resolved commit, size, sha256, what it was verified against).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MANIFEST = "pulled.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ChecksumMismatch(ValueError):
    """The downloaded bytes are not the published ones."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model: `dest` under the models directory; from the Hub (`repo`, `filename`, `revision`)
    or from `url`. `md5` / `sha256`: digests read from a published source (None: none is published)."""
    dest: str
    repo: str | None = None
    filename: str | None = None
    revision: str = "main"
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None

    @property
    def source(self) -> str:
        return f"hf://{self.repo}@{self.revision}/{self.filename}" if self.repo else str(self.url)


@dataclass(frozen=True)
class Pullable:
    name: str
    title: str
    licence: str
    files: tuple[RemoteFile, ...]
    then: str = ""  # what to do after pulling (e.g. the config key that pins its digest)


def _sam(variant: str, fname: str, md5: str) -> Pullable:
    return Pullable(f"sam-{variant}", f"SAM {variant} (segment-anything)", "Apache-2.0",
                    (RemoteFile(f"sam/{fname}", url=f"https://dl.fbaipublicfiles.com/segment_anything/{fname}",
                                md5=md5),),
                    "used when synthesis.sam_variant is " + variant)


def _ace_plus(f, folder: str) -> Pullable:
    """A released ACE++ file (schemas/ace_plus.py) as its repository path under `<models_dir>/<folder>/`."""
    dest = f"{folder}/{f.path}"
    if f.kind == "lora":
        title, then = f"ACE++ LoRA, rank {f.rank}", f"continue from it: aceforge train ... --init-from <models_dir>/{dest}"
    else:
        title = f"ACE++ full fine-tune, {f.in_channels} input channels"
        then = f"make it a base: python -m trainer.released fft-base FILL_DIR <models_dir>/{dest} OUT"
    return Pullable(f.name, title, f.licence, (RemoteFile(dest, repo=f.hf_repo, filename=f.path, sha256=f.sha256),),
                    then)


def catalog() -> dict[str, Pullable]:
    """Every model `models pull` knows, by name. Sources are the authors' (Hub repositories of the model's
    authors or of the library that packages it); revisions are `main` where no commit is pinned."""
    from mining.maps.depth import WEIGHTS
    from schemas.ace_plus import ACE_PLUS_DIR, RELEASED_ACE_PLUS
    from mining.maps.hed import HED_FILE
    from mining.models.embedders import SIGLIP_FILES, SIGLIP_MODEL
    from mining.objects.detect import DETECTOR_FILES, DETECTOR_MODEL
    from mining.objects.inpaint import LAMA_FILE, LAMA_MD5
    from mining.objects.segment import SAM_CHECKPOINTS

    items = [
        Pullable("siglip", "ViT-B-16-SigLIP image tower (open_clip)", "Apache-2.0",
                 tuple(RemoteFile(f"siglip/{SIGLIP_MODEL}/{f}", repo="timm/ViT-B-16-SigLIP", filename=f)
                       for f in SIGLIP_FILES)),
        *(_sam(v, f, md5) for v, (f, md5) in SAM_CHECKPOINTS.items()),
        Pullable("lama", "big-lama TorchScript (LaMa, exported by lama-cleaner)", "Apache-2.0",
                 (RemoteFile(f"lama/{LAMA_FILE}", md5=LAMA_MD5,
                             url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt"),)),
        Pullable("depth-anything-v2-small", "Depth-Anything-V2-Small (transformers)", "Apache-2.0",
                 tuple(RemoteFile(f"depth/depth-anything-v2-small/{f}", repo="depth-anything/Depth-Anything-V2-Small-hf",
                                  filename=f) for f in ("config.json", WEIGHTS, "preprocessor_config.json")),
                 "optional: pin it with synthesis.maps.depth_sha256 (the sha256 printed above)"),
        Pullable("hed", "HED soft edges (ControlNet 1.1 annotators)", "Apache-2.0 (ControlNetHED_Apache2)",
                 (RemoteFile(f"hed/{HED_FILE}", repo="lllyasviel/Annotators", filename=HED_FILE),),
                 "to use it set synthesis.maps.hed_sha256 to the sha256 printed above"),
        Pullable("owlv2", "OWLv2 base/16 ensemble open-vocabulary detector (transformers)", "Apache-2.0",
                 tuple(RemoteFile(f"detector/{DETECTOR_MODEL}/{f}", repo=f"google/{DETECTOR_MODEL}", filename=f)
                       for f in DETECTOR_FILES),
                 "used for named objects when synthesis.object_detector is auto or owlv2"),
        # the released ACE++ weights: never pulled by default (a user asks for them by name)
        *(_ace_plus(f, ACE_PLUS_DIR) for f in RELEASED_ACE_PLUS),
    ]
    return {p.name: p for p in items}


def default_names(sam_variant: str = "vit_b") -> list[str]:
    """What `models pull` fetches without names: what the default configuration uses."""
    return ["siglip", f"sam-{sam_variant}", "lama", "depth-anything-v2-small", "hed", "owlv2"]


# --- digests and the manifest -------------------------------------------------------------------------------

def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def read_manifest(models_dir: str | Path) -> dict[str, dict]:
    p = Path(models_dir) / MANIFEST
    return json.loads(p.read_text()) if p.is_file() else {}


def _record(models_dir: Path, dest: str, entry: dict) -> None:
    data = read_manifest(models_dir)
    data[dest] = entry
    tmp = models_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, models_dir / MANIFEST)


# --- sources ------------------------------------------------------------------------------------------------

def hub_endpoint() -> str | None:
    """`HF_ENDPOINT` read now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def _check_online() -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise RuntimeError("HF_HUB_OFFLINE is set: run `HF_HUB_OFFLINE=0 aceforge models pull ...` to download")


@dataclass
class Remote:
    """What the source says about a file before it is downloaded."""
    size: int | None
    sha256: str | None = None  # the Hub's LFS oid for the file at `commit`
    commit: str | None = None


def probe(rf: RemoteFile) -> Remote:
    if rf.repo:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        ep = hub_endpoint()
        meta = get_hf_file_metadata(hf_hub_url(rf.repo, rf.filename, revision=rf.revision, endpoint=ep),
                                    endpoint=ep)
        etag = (meta.etag or "").lower()
        return Remote(meta.size, etag if _SHA256.match(etag) else None, meta.commit_hash)
    import requests

    r = requests.head(rf.url, allow_redirects=True, timeout=30)
    r.raise_for_status()
    n = r.headers.get("Content-Length")
    return Remote(int(n) if n and n.isdigit() else None)


def http_get_resumable(url: str, part: Path, chunk: int = 1 << 20) -> Path:
    """GET `url` into `part`, continuing from its current length with a Range request; a server that
    ignores the Range gets a fresh download. Returns `part`."""
    import requests

    have = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=60, allow_redirects=True) as r:
        if have and r.status_code == 416:  # already complete
            return part
        r.raise_for_status()
        mode = "ab" if have and r.status_code == 206 else "wb"
        with open(part, mode) as f:
            for block in r.iter_content(chunk):
                f.write(block)
    return part


# --- pull ---------------------------------------------------------------------------------------------------

@dataclass
class Pulled:
    dest: Path
    state: str  # downloaded | present | kept
    sha256: str
    verified: str  # what the bytes were checked against
    size: int = 0
    notes: list[str] = field(default_factory=list)


def _human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return ""


def _check(rf: RemoteFile, path: Path, hub_sha: str | None) -> tuple[str, str]:
    """(sha256, what it was verified against); ChecksumMismatch when a published digest disagrees."""
    sha, md5 = file_digests(path)
    if rf.sha256 and sha != rf.sha256:
        raise ChecksumMismatch(f"{rf.source}: got sha256 {sha}, not the pinned {rf.sha256}")
    if rf.md5 and md5 != rf.md5:
        raise ChecksumMismatch(f"{rf.source}: got md5 {md5}, not the published {rf.md5}")
    if hub_sha and sha != hub_sha:
        raise ChecksumMismatch(f"{rf.source}: got sha256 {sha}, not the Hub's LFS oid {hub_sha}")
    if rf.sha256:
        return sha, "pinned sha256"
    if rf.md5:
        return sha, "published md5"
    if hub_sha:
        return sha, "the Hub's LFS sha256"
    return sha, "none published: digest recorded"


def pull_file(models_dir: Path, model: Pullable, rf: RemoteFile, say: Callable[[str], None]) -> Pulled:
    dest = models_dir / rf.dest
    if dest.exists():
        sha, md5 = file_digests(dest)
        known = read_manifest(models_dir).get(rf.dest, {}).get("sha256")
        pin_ok = (rf.sha256 or rf.md5) and (rf.sha256 in (None, sha)) and (rf.md5 in (None, md5))
        if pin_ok or (not (rf.sha256 or rf.md5) and known == sha):
            return Pulled(dest, "present", sha, "already verified", dest.stat().st_size)
        if rf.sha256 or rf.md5:
            raise ChecksumMismatch(f"{dest} is present but is not the published file "
                                   f"({'sha256 ' + sha if rf.sha256 else 'md5 ' + md5}): move it away to pull it")
        return Pulled(dest, "kept", sha, "present before pull, not placed by it: kept as it is",
                      dest.stat().st_size)
    try:
        remote = probe(rf)
    except Exception as e:  # noqa: BLE001 - name the source that could not be reached
        raise ConnectionError(f"cannot reach {rf.source}: {e}") from e
    if rf.sha256 and remote.sha256 and remote.sha256 != rf.sha256:
        raise ChecksumMismatch(f"{rf.source} is sha256 {remote.sha256} on the Hub, not the pinned {rf.sha256}")
    at = f" (commit {remote.commit[:12]})" if remote.commit else ""
    say(f"{model.name}: {rf.source}{at} -> {dest}  [{_human(remote.size)}, licence {model.licence}]")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if rf.repo:
        staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=models_dir))
        try:
            from huggingface_hub import hf_hub_download

            got = Path(hf_hub_download(rf.repo, rf.filename, revision=rf.revision, local_dir=staging,
                                       endpoint=hub_endpoint()))
            sha, how = _check(rf, got, remote.sha256)  # a mismatch leaves with the staging folder
            os.replace(got, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # this pull's own folder
    else:
        part = dest.with_name(dest.name + ".part")
        if part.is_file():
            say(f"  resuming {part} from {_human(part.stat().st_size)}")
        http_get_resumable(rf.url, part)
        try:
            sha, how = _check(rf, part, None)
        except ChecksumMismatch:
            part.unlink()  # the bytes this pull wrote
            raise
        os.replace(part, dest)
    size = dest.stat().st_size
    _record(models_dir, rf.dest, {"source": rf.source, "commit": remote.commit, "size": size, "sha256": sha,
                                  "verified": how, "licence": model.licence})
    return Pulled(dest, "downloaded", sha, how, size)


def pull(models_dir: str | Path, names: list[str], say: Callable[[str], None] = print,
         models: dict[str, Pullable] | None = None) -> list[Pulled]:
    """Pull every file of the named models into `models_dir`; returns what each file became. Unknown names
    are an error before anything is downloaded."""
    known = models if models is not None else catalog()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown model {', '.join(unknown)}; pullable: {', '.join(known)}")
    if any(rf.repo for n in names for rf in known[n].files):
        _check_online()
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        for rf in known[n].files:
            res = pull_file(root, known[n], rf, say)
            say(f"  {res.state}: {res.dest} sha256 {res.sha256} ({res.verified})")
            out.append(res)
        if known[n].then:
            say(f"  {known[n].then}")
    return out


def describe(models: dict[str, Pullable] | None = None) -> list[str]:
    """One line per pullable model and file: name, licence, source, destination."""
    lines = []
    for p in (models or catalog()).values():
        lines.append(f"{p.name}: {p.title}, licence {p.licence}")
        for rf in p.files:
            pin = (f"sha256 {rf.sha256}" if rf.sha256 else f"md5 {rf.md5}" if rf.md5 else
                   "sha256: the Hub's LFS oid (LFS files), else recorded" if rf.repo else "no published digest")
            lines.append(f"  {rf.source} -> {rf.dest}  ({pin})")
    return lines


__all__ = ["MANIFEST", "ChecksumMismatch", "Pullable", "Pulled", "RemoteFile", "catalog", "default_names",
           "describe", "file_digests", "http_get_resumable", "pull", "pull_file", "read_manifest"]
