from flows import settings


def test_defaults_fill_gaps_and_never_override(monkeypatch):
    for k in settings.DEFAULTS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    settings.apply()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "0"  # the user's choice stands
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 60
