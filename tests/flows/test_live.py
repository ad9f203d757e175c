import base64
import io
import json
import time

import numpy as np
from PIL import Image

from flows.live import LiveWatcher, PrefectPublisher, PrintPublisher, live_view
from schemas import io as storage
from trainer.live import LiveLog


def _wait(what, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not seen within {timeout} s")


def _grid_png() -> bytes:
    im = Image.fromarray(np.arange(64 * 256 * 3, dtype=np.uint32).reshape(64, 256, 3).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _latest(client, key):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                 sort=ArtifactSort.UPDATED_DESC, limit=1)
    return arts[0] if arts else None


def test_the_live_view_publishes_progress_metrics_eval_and_grid_while_the_run_goes_on(tmp_path, prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client

    run_dir = str(tmp_path / "run")
    client = get_client(sync_client=True)

    def progress():
        a = _latest(client, "train-live-t-progress")
        return a.data if a is not None else None

    @flow
    def fake_training_run() -> list[float]:  # stands in for the task that blocks in Ray's fit()
        log = LiveLog(run_dir, max_steps=4)
        seen = []
        with live_view("live-t", poll_s=0.1)(run_dir):
            log.add_metrics({"step": 1, "loss": 0.5, "lr": 1e-3})
            log.write(1)
            seen.append(_wait(lambda: progress() == 25.0 and progress()))
            storage.atomic_write_bytes(storage.join(run_dir, "eval", "step-0000002.png"), _grid_png())
            log.add_metrics({"step": 2, "loss": 0.25, "lr": 1e-3, "eval_loss": {"inpainting": 0.3}})
            log.add_eval({"step": 2, "loss": {"inpainting": 0.3, "general_editing": 0.7},
                          "samples": {"inpainting": 1, "general_editing": 1}, "grid": "step-0000002.png",
                          "grid_keys": ["a", "b"]})
            log.write(2)
            seen.append(_wait(lambda: progress() == 50.0 and _latest(client, "train-live-t-grid") and progress()))
            log.add_metrics({"step": 3, "loss": 0.2, "lr": 1e-3})
            log.write(3)  # the last state is published when the watch ends
        return seen

    assert fake_training_run() == [25.0, 50.0]  # seen in the UI's API while the run was still going
    assert progress() == 75.0
    metrics = _latest(client, "train-live-t-metrics")
    rows = json.loads(metrics.data)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["loss"] == 0.2
    ev = _latest(client, "train-live-t-eval")
    ev_rows = json.loads(ev.data)
    assert ev_rows == [{"step": 2, "general_editing": 0.7, "inpainting": 0.3}]
    md = _latest(client, "train-live-t-grid").data
    assert "step 2" in md and "samples a, b" in md
    jpeg = base64.b64decode(md.split("data:image/jpeg;base64,")[1].rstrip(")"))
    assert Image.open(io.BytesIO(jpeg)).size == (256, 64)


def test_an_unreachable_api_is_reported_once_and_counted(tmp_path, capsys, prefect_harness):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    run_dir = str(tmp_path / "run")
    log = LiveLog(run_dir, max_steps=10)
    watcher = LiveWatcher(run_dir, PrefectPublisher("training t", "train-t"), poll_s=60)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}):
        for step in (1, 2):
            log.add_metrics({"step": step, "loss": 1.0 / step})
            log.write(step)
            watcher.poll()
    assert watcher.failures == 2
    assert capsys.readouterr().out.count("live training view unavailable") == 1


def test_outside_prefect_the_view_prints_a_line_per_update(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    log = LiveLog(run_dir, max_steps=10)
    watcher = LiveWatcher(run_dir, PrintPublisher("training t"), poll_s=60)
    watcher.poll()  # no live file yet: nothing
    log.add_metrics({"step": 5, "loss": 0.125})
    log.add_eval({"step": 5, "loss": {"inpainting": 0.5}, "samples": {"inpainting": 1}, "grid": None})
    log.write(5)
    watcher.poll()
    watcher.poll()  # unchanged: nothing more
    assert capsys.readouterr().out.splitlines() == ["training t: step 5 of 10, loss 0.12500",
                                                    "training t: held-out loss at step 5: inpainting 0.50000"]
