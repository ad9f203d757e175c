"""Checks that run before any work of a command that starts stages or training, each failing in one line:

- models: every file the enabled stages will load (`planned_models`) is present where configured and matches
  the checksum its loader pins. Digests are cached by path, size and mtime (`$XDG_CACHE_HOME/aceforge/`), so a
  re-run does not hash gigabytes again.
- models_dir: a folder that does not exist is an error when it was set explicitly (config key `models_dir` or
  env ACEFORGE_MODELS). The default `models` may be absent: every `auto` model then takes its fallback, and a
  model the config names explicitly fails as a missing file naming the path it would be read from.
- storage: the root is writable: a probe object is written and deleted (only that object; on a local root,
  also the folders the probe itself created). Remote probes use short timeouts and one attempt.
- free space on a local root: a warning below ACEFORGE_MIN_FREE_GB (default 5).

`one_line(e)` is how a command reports a failure: the root cause of Ray / Prefect wrapped errors, one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Callable

from mining.models.registry import PlannedModel
from schemas.config import RunConfig

PROBE_DEADLINE_S = 10.0
DEFAULT_MIN_FREE_GB = 5.0


class PreflightError(RuntimeError):
    """A check before any work failed; the message is one line naming the file, key or root."""


# --- models -------------------------------------------------------------------------------------------

def planned_models(cfg: RunConfig) -> list[PlannedModel]:
    """Every model file the stages `cfg` enables will look up, with its pin (the loaders' own constants)."""
    from mining.models.embedders import SIGLIP_FILES, siglip_dir
    from mining.objects.inpaint import LAMA_MD5, lama_path
    from mining.models.mediapipe import MP_FILES, mp_model_files
    from mining.objects.segment import SAM_CHECKPOINTS, sam_path
    from schemas.config import FACE_TASKS, MAP_TASKS, TEXT_TASKS
    from stages.synthesis.maps import map_kinds
    from stages.synthesis.objects import OBJECT_TASKS

    models, s = Path(cfg.models_dir), cfg.synthesis
    tasks = set(s.tasks)
    out: list[PlannedModel] = []

    def siglip(key: str) -> None:
        out.extend(PlannedModel(f"SigLIP ({key})", siglip_dir(models) / f, True) for f in SIGLIP_FILES)

    def mediapipe(names: tuple[str, ...], required: bool) -> None:
        out.extend(PlannedModel(f"MediaPipe {n}", p, required, "sha256", MP_FILES[n][1])
                   for n, p in zip(names, mp_model_files(models, names)))

    def inpainter_and_artefacts() -> None:
        if s.inpainter != "cv2":
            out.append(PlannedModel("big-lama", lama_path(models), s.inpainter == "lama", "md5", LAMA_MD5))
        if s.verify.artefact_classifier:
            from mining.models.artefacts import artefact_path

            out.append(PlannedModel("artefact classifier", artefact_path(models, s.verify.artefact_classifier), True))

    if cfg.mining.embedder == "siglip":
        siglip("mining.embedder")
    if cfg.mining.pair_classifier:
        out.append(PlannedModel("pair classifier", models / cfg.mining.pair_classifier, True))
    objects = bool(tasks & set(OBJECT_TASKS)) or "long_context" in tasks
    maps = bool(tasks & set(MAP_TASKS))
    if (objects or maps) and s.segmenter != "regions":
        out.append(PlannedModel(f"SAM {s.sam_variant}", sam_path(models, s.sam_variant), s.segmenter == "sam",
                                "md5", SAM_CHECKPOINTS[s.sam_variant][1]))
    if (objects or maps) and s.object_detector == "owlv2":
        from mining.objects.detect import detector_dir

        out.extend(PlannedModel("open-vocabulary detector (synthesis.object_detector)", detector_dir(models) / f, True)
                   for f in ("config.json", "model.safetensors"))
    if (objects or maps) and s.people != "off":
        mediapipe(("selfie_segmentation.tflite",), s.people == "on")
    if objects:
        inpainter_and_artefacts()
        if s.object_namer == "siglip":
            siglip("synthesis.object_namer")
    if tasks & set(TEXT_TASKS):
        inpainter_and_artefacts()
        if s.text.ocr == "paddleocr":
            out.extend(PlannedModel(f"PaddleOCR {k}", models / "paddleocr" / k, True) for k in ("det", "rec"))
    if maps:
        from mining.maps.depth import WEIGHTS, depth_dir
        from mining.maps.hed import hed_path

        kinds = set(map_kinds(sorted(tasks & set(MAP_TASKS))))
        used = (kinds - {"multi"}) | (set(s.maps.multi_from) if "multi" in kinds else set())
        if "depth" in used and s.maps.depth_sha256:
            out.append(PlannedModel(f"depth {s.maps.depth_model}", depth_dir(models, s.maps.depth_model) / WEIGHTS,
                                    False, "sha256", s.maps.depth_sha256))
        if used & {"scribble", "doodle"}:
            out.append(PlannedModel("HED", hed_path(models), False, "sha256", s.maps.hed_sha256,
                                    "synthesis.maps.hed_sha256 pins no digest: the maps stage refuses it"))
        if "pose" in used:
            mediapipe(("pose_detection.tflite", "pose_landmark_full.tflite"), False)
    if tasks & set(FACE_TASKS):
        from mining.faces.dlib_faces import DESCRIPTOR_FILE, LANDMARKS_FILE, PINNED_SHA256

        out.extend(PlannedModel(f"dlib {n}", models / "dlib" / n, False, "sha256", PINNED_SHA256[n])
                   for n in (LANDMARKS_FILE, DESCRIPTOR_FILE))
    if tasks & {"style_editing", "style_transfer_reference"} and s.style.extractor != "randconv":
        from mining.style.features import VGG_SHA256, vgg_path

        pin = s.style.vgg_sha256 or VGG_SHA256
        if s.style.extractor == "vgg16" or pin is not None:  # auto without a pin never reads the file
            out.append(PlannedModel("VGG16 style", vgg_path(models), s.style.extractor == "vgg16", "sha256", pin,
                                    "synthesis.style.vgg_sha256 pins no digest: the style stage refuses it"))
    return out


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aceforge" / "model-digests.json"


def file_digest(path: Path, algo: str) -> str:
    """The file's digest, hashed once per (path, size, mtime): later calls read the cached value."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{algo}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = _hash_file(path, algo)
    known = {k: v for k, v in known.items() if not k.startswith(f"{path.resolve()}|")}
    known[key] = digest
    try:  # an unwritable cache only costs the next run a hash
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:
        pass
    return digest


def _models_dir_source(cfg: RunConfig) -> str | None:
    """Who set models_dir: the config, the environment, or nobody (the default)."""
    if "models_dir" in cfg.model_fields_set:
        return "config key models_dir"
    if os.environ.get("ACEFORGE_MODELS") and cfg.models_dir == os.environ["ACEFORGE_MODELS"]:
        return "env ACEFORGE_MODELS"
    return None


def check_models(cfg: RunConfig) -> None:
    models = Path(cfg.models_dir)
    who = _models_dir_source(cfg)
    if who and not models.is_dir():
        what = "is not a folder" if models.exists() else "does not exist"
        raise PreflightError(f"models_dir {models.resolve()} {what} (set by {who})")
    for m in planned_models(cfg):
        if not m.path.exists():
            if m.required:
                where = "" if models.is_dir() else f" (models_dir {models.resolve()} does not exist)"
                raise PreflightError(f"{m.name}: {m.path} not found{where}")
            continue
        if m.path.is_dir() or m.algo is None and m.unpinned_error is None:
            continue
        if m.digest is None:
            raise PreflightError(f"{m.name}: {m.path} is present but {m.unpinned_error}")
        got = file_digest(m.path, m.algo)
        if got != m.digest:
            raise PreflightError(f"{m.name}: {m.path} has {m.algo} {got}, expected the pinned {m.digest}")
    from mining.pairs.presets import preset
    from stages.pairs.mine import classifier_file

    if "text_to_image" in cfg.synthesis.tasks and cfg.mining.instructions.backend not in ("chat", "local_vlm"):
        raise PreflightError(f"text_to_image needs a captioning model: mining.instructions.backend is "
                             f"{cfg.mining.instructions.backend!r}, set it to chat or local_vlm (templates never "
                             f"stand in for captions)")
    for name in cfg.mining.presets:  # a preset that needs its task's pair classifier refuses without one
        try:
            classifier_file(cfg.models_dir, cfg.mining, preset(name))
        except ValueError as e:
            raise PreflightError(str(e)) from None


# --- storage ------------------------------------------------------------------------------------------

def _cause_text(e: BaseException) -> str:
    """What went wrong, in words a user acts on: no credentials, bucket missing, permission denied, ..."""
    chain, x = [], e
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    for x in chain:
        name, text = type(x).__name__, " ".join(str(x).split())
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return f"no credentials ({text})"
        if name in ("EndpointConnectionError", "ConnectionClosedError") or isinstance(x, ConnectionError):
            return f"cannot reach the endpoint ({text})"
        if name in ("ConnectTimeoutError", "ReadTimeoutError") or isinstance(x, TimeoutError):
            return f"no answer from the endpoint ({text})"
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return f"bucket missing ({text})"
        if any(k in text for k in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken")):
            return f"credentials rejected ({text})"
        if isinstance(x, PermissionError) or "AccessDenied" in text:
            return f"permission denied ({text})"
    x = chain[0]
    return f"{type(x).__name__}: {' '.join(str(x).split())}" if str(x) else type(x).__name__


def _probe_local(root: str) -> None:
    path = Path(root).expanduser()
    made: list[Path] = []
    q = path
    while not q.exists() and q != q.parent:
        made.append(q)
        q = q.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f"_preflight-{uuid.uuid4().hex[:12]}"
        with open(probe, "xb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise PreflightError(f"storage root {root} is not writable: {_cause_text(e)}") from None
    finally:
        for d in made:  # deepest first: only the folders this probe created, and only while empty
            try:
                d.rmdir()
            except OSError:
                break


def _probe_remote(root: str, deadline_s: float) -> None:
    import fsspec

    protocol = root.split("://", 1)[0]
    opts: dict = {}
    if protocol in ("s3", "s3a"):  # the probe only: short timeouts, one attempt
        opts = {"skip_instance_cache": True, "config_kwargs": {
            "connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 1, "mode": "standard"}}}
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            fs, path = fsspec.core.url_to_fs(root, **opts)
            if opts:
                fs.retries = 1
            key = f"{path.rstrip('/')}/_preflight-{uuid.uuid4().hex[:12]}"
            fs.pipe_file(key, b"ok")
            fs.rm_file(key)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported by the caller, in one line
            outcome.append(e)

    t = threading.Thread(target=probe, name="storage-preflight", daemon=True)
    t.start()
    t.join(deadline_s)
    if not outcome:
        raise PreflightError(f"storage root {root} is not writable: no answer within {deadline_s:.0f} s")
    if outcome[0] is not None:
        raise PreflightError(f"storage root {root} is not writable: {_cause_text(outcome[0])}")


def check_storage(root: str, deadline_s: float = PROBE_DEADLINE_S) -> None:
    if "://" in root and not root.startswith("file://"):
        _probe_remote(root, deadline_s)
    else:
        _probe_local(root.removeprefix("file://"))


def free_space_warning(root: str) -> str | None:
    if "://" in root and not root.startswith("file://"):
        return None
    q = Path(root.removeprefix("file://")).expanduser().absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    limit = float(os.environ.get("ACEFORGE_MIN_FREE_GB", DEFAULT_MIN_FREE_GB))
    free = shutil.disk_usage(q).free / 2**30
    if free < limit:
        return (f"only {free:.1f} GiB free for root {root} (below {limit:g} GiB, env ACEFORGE_MIN_FREE_GB): "
                "a full disk fails the run")
    return None


def preflight(cfg: RunConfig, models: bool = True, warn: Callable[[str], None] | None = None) -> list[str]:
    """Models (when the command loads any), then storage, then free space; PreflightError on a failure,
    returns the warnings (each also passed to `warn`)."""
    if models:
        check_models(cfg)
    check_storage(cfg.root)
    warnings = [w for w in (free_space_warning(cfg.root),) if w]
    for w in warnings:
        (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(w)
    return warnings


# --- one-line failures ---------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)?: (.+)$")


def root_cause(e: BaseException) -> BaseException:
    """The exception under Ray's task wrapper, an exception group, or a Prefect wrapper."""
    for _ in range(32):
        mod = type(e).__module__ or ""
        cause = getattr(e, "cause", None)
        if mod.startswith("ray.") and type(e).__name__.startswith("RayTaskError") and isinstance(cause, BaseException):
            e = cause
        elif isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        elif mod.startswith("prefect") and e.__cause__ is not None:
            e = e.__cause__
        else:
            return e
    return e


def one_line(e: BaseException) -> str:
    """A failure as one line: the root cause's message (an actor that died in its constructor: the last line
    of the traceback it carries, the error that killed it)."""
    e = root_cause(e)
    text = _ANSI.sub("", str(e))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if type(e).__module__.startswith("ray.") and getattr(e, "actor_init_failed", False) and lines:
        m = _EXC_LINE.match(lines[-1])
        lines = [m.group(1) if m else lines[-1]]
    out = " ".join(lines) or type(e).__name__
    if isinstance(e, KeyError):
        out = f"KeyError {out}"
    return out if len(out) <= 2000 else out[:2000] + " ..."
