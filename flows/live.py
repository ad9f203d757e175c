"""Training seen while it runs: a thread in the driver (the Prefect task's process, blocked in Ray's fit())
follows the run's live file (trainer/live.py) and publishes what changed.

In a Prefect run: a progress artifact (step / max_steps), a table of the recent metrics, a table of eval loss
per task per checkpoint, and each checkpoint's image grid as markdown (an inline JPEG). The thread runs in a
copy of the caller's context, so the artifacts belong to the calling task run. Outside a Prefect run: one
printed line per update. The thread only reads files and calls the API: training never waits on it. A
publish that fails (API unreachable) is reported once, counted, and retried at the next change.
"""

from __future__ import annotations

import base64
import contextvars
import io
import threading
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

from flows.artifacts import artifact_key
from schemas import io as storage
from schemas.layout import RunFiles
from trainer.live import EVAL_DIR, read_live

GRID_WIDTH = 1024  # the grid as shown in the UI; the full-size PNG stays in the run folder
TABLE_KEYS = ("step", "loss", "l_ref", "l_tar", "grad_norm", "lr", "samples_per_s", "tokens_per_s", "gpu_mem_gb")


def _round(v):
    return round(v, 5) if isinstance(v, float) else v


def metrics_rows(recent: list[dict]) -> list[dict]:
    return [{k: _round(m[k]) for k in TABLE_KEYS if k in m} for m in recent]


def eval_rows(evals: list[dict]) -> list[dict]:
    """One row per checkpoint: the step, then the eval loss of each task (blank where a task was not measured)."""
    tasks = sorted({t for e in evals for t in e["loss"]})
    return [{"step": e["step"], **{t: _round(e["loss"].get(t)) for t in tasks}} for e in evals]


def grid_markdown(png: bytes, title: str, step: int, keys: list[str]) -> str:
    im = Image.open(io.BytesIO(png)).convert("RGB")
    if im.width > GRID_WIDTH:
        im = im.resize((GRID_WIDTH, max(1, round(im.height * GRID_WIDTH / im.width))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return (f"## {title}: step {step}\n\nColumns: input, mask (white = generate), output, target. Rows: held-out "
            f"samples {', '.join(keys)}.\n\n![step {step}]({uri})")


class PrefectPublisher:
    """Artifacts of the current Prefect run, keyed `<key>-progress`, `-metrics`, `-eval`, `-grid`."""

    def __init__(self, title: str, key: str):
        self.title, self.key = title, artifact_key(key)
        self.progress_id = None

    def progress(self, step: int, max_steps: int) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        pct = min(100.0, 100.0 * step / max(1, max_steps))
        if self.progress_id is None:
            self.progress_id = create_progress_artifact(pct, key=f"{self.key}-progress",
                                                        description=f"{self.title}: steps done")
        else:
            update_progress_artifact(self.progress_id, pct)

    def metrics(self, state: dict) -> None:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(metrics_rows(state["recent"]), key=f"{self.key}-metrics",
                              description=f"{self.title}: recent steps (step {state['step']} of {state['max_steps']})")

    def evals(self, evals: list[dict]) -> None:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(eval_rows(evals), key=f"{self.key}-eval",
                              description=f"{self.title}: held-out loss per task at each checkpoint")

    def grid(self, png: bytes, step: int, keys: list[str]) -> None:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(grid_markdown(png, self.title, step, keys), key=f"{self.key}-grid",
                                 description=f"{self.title}: held-out samples at step {step}")


class PrintPublisher:
    """One line per update, for runs outside Prefect."""

    def __init__(self, title: str):
        self.title = title

    def progress(self, step: int, max_steps: int) -> None:
        pass

    def metrics(self, state: dict) -> None:
        last = state["recent"][-1] if state["recent"] else {}
        loss = f", loss {last['loss']:.5f}" if "loss" in last else ""
        print(f"{self.title}: step {state['step']} of {state['max_steps']}{loss}")

    def evals(self, evals: list[dict]) -> None:
        e = evals[-1]
        print(f"{self.title}: held-out loss at step {e['step']}: "
              + ", ".join(f"{t} {v:.5f}" for t, v in sorted(e["loss"].items())))

    def grid(self, png: bytes, step: int, keys: list[str]) -> None:
        pass


class LiveWatcher:
    """Polls <run_dir>/live.json every `poll_s` seconds and publishes each change; a last poll on stop."""

    def __init__(self, run_dir: str, publisher, poll_s: float = 2.0):
        self.run_dir, self.pub, self.poll_s = run_dir, publisher, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple | None = None
        self._evals_shown: int | None = None  # step of the last evaluation published
        self.failures = 0

    def start(self) -> LiveWatcher:
        try:  # a live file left by an earlier run of this name is not news
            old = read_live(self.run_dir)
        except Exception:
            old = None
        if old is not None:
            evals = old.get("evals", [])
            self._seen = (old["step"], old.get("time"), evals[-1]["step"] if evals else None)
            self._evals_shown = evals[-1]["step"] if evals else None
        ctx = contextvars.copy_context()  # the Prefect run context, for the artifacts' run ids
        self._thread = threading.Thread(target=ctx.run, args=(self._run,), name="aceforge-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.failures:
            print(f"live training view: {self.failures} publish attempts failed (the run's files are complete)")

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()
        self.poll()

    def poll(self) -> None:
        try:
            state = read_live(self.run_dir)
        except Exception as e:  # a half-visible object store listing, a network hiccup: next poll
            self._failed(f"cannot read {RunFiles(self.run_dir).live}: {e}")
            return
        if state is None:
            return
        evals = state.get("evals", [])
        mark = (state["step"], state.get("time"), evals[-1]["step"] if evals else None)
        if mark == self._seen:
            return
        try:
            self.pub.progress(state["step"], state["max_steps"])
            if state.get("recent"):
                self.pub.metrics(state)
            if evals and evals[-1]["step"] != self._evals_shown:
                self.pub.evals(evals)
                last = evals[-1]
                if last.get("grid"):
                    png = self._read(storage.join(self.run_dir, EVAL_DIR, last["grid"]))
                    self.pub.grid(png, last["step"], last.get("grid_keys", []))
                self._evals_shown = last["step"]
            self._seen = mark
        except Exception as e:
            self._failed(f"{type(e).__name__}: {e}")

    @staticmethod
    def _read(uri: str) -> bytes:
        fs, path = storage.fs_path(uri)
        with fs.open(path, "rb") as f:
            return f.read()

    def _failed(self, why: str) -> None:
        if not self.failures:
            print(f"live training view unavailable ({why}); training goes on, retrying at the next change")
        self.failures += 1


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def live_view(run_name: str, poll_s: float = 2.0):
    """`watch` for trainer.ray_job.run_training: artifacts in a Prefect run, printed lines outside one."""
    title = f"training {run_name}"
    publisher = PrefectPublisher(title, f"train-{run_name}") if in_prefect_run() else PrintPublisher(title)

    @contextmanager
    def watch(run_dir: str) -> Iterator[LiveWatcher]:
        w = LiveWatcher(run_dir, publisher, poll_s).start()
        try:
            yield w
        finally:
            w.stop()

    return watch
