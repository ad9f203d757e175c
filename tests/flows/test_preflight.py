"""Checks before any work: the models the enabled stages load (present, checksums pinned in the registry),
the storage root (a probe object written and deleted), free space; failures end in one line."""

import hashlib
import socket
import time
import traceback

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.preflight import PreflightError, check_models, check_storage, one_line, preflight
from mining.objects.segment import SAM_CHECKPOINTS, ChecksumError, sam_path
from schemas.config import RunConfig
from tests.integration.test_s3 import s3  # noqa: F401 - the moto server fixture

runner = CliRunner()
SAM_MD5 = SAM_CHECKPOINTS["vit_b"][1]


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _wrong_sam(models) -> str:
    path = sam_path(models, "vit_b")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a SAM checkpoint")
    return str(path)


def _objects_cfg(tmp_path) -> RunConfig:
    return RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                     synthesis={"tasks": ["object_removal"]})


def test_a_wrong_bytes_checkpoint_fails_before_any_stage_directory(tmp_path):
    from flows.direct import run_mining

    path = _wrong_sam(tmp_path / "models")
    (tmp_path / "src").mkdir()
    cfg = _objects_cfg(tmp_path)
    with pytest.raises(PreflightError) as e:
        run_mining(cfg, source=str(tmp_path / "src"))
    got = hashlib.md5(b"not a SAM checkpoint").hexdigest()
    msg = str(e.value)
    assert path in msg and SAM_MD5 in msg and got in msg and "\n" not in msg
    assert not (tmp_path / "root" / "catalog").exists()


def test_digests_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import flows.preflight as pf

    path = _wrong_sam(tmp_path / "models")
    calls = []
    real = pf._hash_file
    monkeypatch.setattr(pf, "_hash_file", lambda p, algo: calls.append(p) or real(p, algo))
    cfg = _objects_cfg(tmp_path)
    for _ in range(2):
        with pytest.raises(PreflightError):
            check_models(cfg)
    assert len(calls) == 1  # the second verdict came from the cache
    with open(path, "ab") as f:
        f.write(b"more")
    with pytest.raises(PreflightError, match=hashlib.md5(b"not a SAM checkpointmore").hexdigest()):
        check_models(cfg)
    assert len(calls) == 2  # another size: hashed again


def test_an_explicit_choice_whose_file_is_absent_is_an_error(tmp_path):
    (tmp_path / "models").mkdir()
    sam = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["object_removal"], "segmenter": "sam"})
    with pytest.raises(PreflightError, match=r"sam_vit_b_01ec64\.pth.*(absent|not found)"):
        check_models(sam)
    check_models(_objects_cfg(tmp_path))  # auto with no file: the offline proposer, nothing to check


def test_a_missing_models_dir_set_explicitly_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ACEFORGE_MODELS", raising=False)
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "modles"))
    with pytest.raises(PreflightError, match=r"models_dir .*modles does not exist"):
        check_models(cfg)
    monkeypatch.chdir(tmp_path)
    check_models(RunConfig(root=str(tmp_path / "root")))  # the default, absent, and nothing needs a file: fine
    sam = RunConfig(root=str(tmp_path / "root"), synthesis={"tasks": ["object_removal"], "segmenter": "sam"})
    with pytest.raises(PreflightError, match=r"models.sam.sam_vit_b_01ec64\.pth"):
        check_models(sam)  # the default, absent, but a configured model would be looked up there
    monkeypatch.setenv("ACEFORGE_MODELS", str(tmp_path / "elsewhere"))
    with pytest.raises(PreflightError, match=r"ACEFORGE_MODELS"):
        check_models(RunConfig(root=str(tmp_path / "root")))


def test_a_local_root_probe_leaves_nothing_behind(tmp_path):
    root = tmp_path / "a" / "b" / "root"
    check_storage(str(root))
    assert not (tmp_path / "a").exists()  # the folders the probe made are gone with it
    root.mkdir(parents=True)
    (root / "keep.txt").write_text("x")
    check_storage(str(root))
    assert [p.name for p in root.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match=r"storage root .*file/root is not writable"):
        check_storage(str(tmp_path / "file" / "root"))


def test_low_free_space_is_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("ACEFORGE_MIN_FREE_GB", str(10 ** 9))
    warnings = preflight(RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path)))
    assert len(warnings) == 1 and "free" in warnings[0] and str(tmp_path) in warnings[0]
    monkeypatch.setenv("ACEFORGE_MIN_FREE_GB", "0")
    assert preflight(RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path))) == []


def test_s3_probe_writes_and_deletes_only_its_own_object(s3, monkeypatch, tmp_path):  # noqa: F811
    """The probe writes and deletes only its own object; a missing bucket and missing credentials are named."""
    s3.pipe("aceforge-test/root/keep", b"x")
    check_storage("s3://aceforge-test/root")
    assert s3.ls("aceforge-test/root", refresh=True) == ["aceforge-test/root/keep"]
    with pytest.raises(PreflightError, match=r"s3://aceforge-nope/root .*bucket"):
        check_storage("s3://aceforge-nope/root")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(PreflightError, match=r"s3://aceforge-test/root .*no credentials"):
        check_storage("s3://aceforge-test/root")


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_s3_endpoint_that_refuses_fails_within_seconds(monkeypatch, tmp_path):
    import fsspec

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION":
                 "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}.items():
        monkeypatch.setenv(k, v)
    fsspec.filesystem("s3").clear_instance_cache()
    t = time.monotonic()
    res = runner.invoke(app, ["ingest", str(tmp_path), "--root", "s3://aceforge-test/root"])
    took = time.monotonic() - t
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert "s3://aceforge-test/root" in lines[0] and "reach" in lines[0], lines
    assert took < 20  # the probe alone bounds it (the flow's own retries took 43 s)


def test_mine_ends_in_one_line_before_the_flow_starts(tmp_path, monkeypatch):
    import flows.pipelines

    started = []
    monkeypatch.setattr(flows.pipelines, "mine_flow", lambda **kw: started.append(kw))
    path = _wrong_sam(tmp_path / "models")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"models_dir: {tmp_path / 'models'}\nsynthesis:\n  tasks: [object_removal]\n")
    res = runner.invoke(app, ["mine", "--root", str(tmp_path / "root"), "-c", str(cfg)])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and path in lines[0] and SAM_MD5 in lines[0], res.output
    assert not started and not (tmp_path / "root").exists()


def _actor_died(cause: BaseException):
    from ray.exceptions import ActorDiedError, RayTaskError

    try:
        raise cause
    except type(cause):
        tb = traceback.format_exc()
    return ActorDiedError(RayTaskError("SegmentActor.__init__", tb, cause, proctitle="ray::x", pid=1,
                                       ip="127.0.0.1", actor_id=b"\0" * 16))


def test_ray_wrapped_errors_end_in_their_cause_line(tmp_path, monkeypatch):
    import flows.pipelines
    from ray.exceptions import RayTaskError

    err = ChecksumError("/m/sam/sam_vit_b_01ec64.pth has md5 aa, not the pinned bb of SAM vit_b")
    assert one_line(_actor_died(err)).endswith(str(err))
    wrapped = RayTaskError("f", "Traceback ...\nOSError: x", OSError(28, "No space left on device", "/r/s.tar"),
                           proctitle="ray::f", pid=1, ip="127.0.0.1").as_instanceof_cause()
    assert one_line(wrapped) == "[Errno 28] No space left on device: '/r/s.tar'"

    def boom(**kw):
        raise _actor_died(err)

    monkeypatch.setattr(flows.pipelines, "mine_flow", boom)
    monkeypatch.setattr("flows.preflight.preflight", lambda *a, **k: [])
    res = runner.invoke(app, ["mine", "--root", str(tmp_path / "root")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and lines == [f"mine failed: {one_line(_actor_died(err))}"], res.output


def test_a_chosen_detector_that_is_absent_is_named_before_the_run(tmp_path):
    from flows.preflight import PreflightError, check_models
    from schemas.config import RunConfig

    (tmp_path / "models").mkdir()
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["object_removal"], "object_detector": "owlv2"})
    with pytest.raises(PreflightError, match="open-vocabulary detector.*detector/owlv2-base-patch16-ensemble/config.json"):
        check_models(cfg)
    auto = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                     synthesis={"tasks": ["object_removal"]})
    check_models(auto)  # auto: absent is fine (the class-agnostic segmenter stays)
