"""The models directory when the config leaves it out: ACEFORGE_MODELS, else an existing ./models, else the per-user
cache (platformdirs honours XDG_CACHE_HOME), so that what `make install` fetched is found from any folder."""

from __future__ import annotations

import shutil

from schemas.config import RunConfig
from schemas.config.run import default_models_dir


def test_env_then_an_existing_local_models_folder_then_the_per_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACEFORGE_MODELS", str(tmp_path / "elsewhere"))
    assert RunConfig().models_dir == str(tmp_path / "elsewhere")
    monkeypatch.delenv("ACEFORGE_MODELS")
    assert default_models_dir() == str(tmp_path / "cache" / "aceforge" / "models")
    (tmp_path / "models").mkdir()
    assert RunConfig().models_dir == "models"
    assert RunConfig(models_dir="/x").models_dir == "/x"  # the config key wins over all of them


def test_models_from_another_folder_finds_the_mediapipe_files_make_install_put_in_the_cache(
        tmp_path, monkeypatch, mp_models):
    from typer.testing import CliRunner

    from flows.cli import app
    from mining.models.mediapipe import MP_FILES
    from mining.models.registry import model_status

    cache = tmp_path / "cache"
    target = cache / "aceforge" / "models" / "mediapipe"
    target.mkdir(parents=True)
    for name in MP_FILES:
        shutil.copy(mp_models / "mediapipe" / name, target / name)
    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ACEFORGE_MODELS", raising=False)
    status = {m.name.split(" (")[0]: m.present for m in model_status(RunConfig())}
    assert status["MediaPipe selfie segmentation"] and status["MediaPipe BlazePose full"]
    res = CliRunner().invoke(app, ["models"], env={"XDG_CACHE_HOME": str(cache)})
    assert res.exit_code == 0, res.output
    assert f"models directory: {cache / 'aceforge' / 'models'}" in res.output
    # without the cache's files the same folder reports them absent: the check above could fail
    shutil.rmtree(target)
    status = {m.name.split(" (")[0]: m.present for m in model_status(RunConfig())}
    assert not status["MediaPipe selfie segmentation"]
