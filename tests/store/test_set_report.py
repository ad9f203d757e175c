"""The dataset report of a shard set: every task with its drop reasons, score histograms, a thumbnail grid; read
in a real browser (headless Chromium) at a laptop's size in the slow suite."""

import numpy as np
import pytest

from runtime.executors import LocalExecutor
from schemas.config import RunConfig
from store import storage
from store.sample_table import read_samples
from tests.conftest import make_sample
from tests.stages.test_pack_units import Planted, plant

TASKS = ("general_editing", "inpainting", "outpainting")  # random pairs: general editing is all dropped


class ThreeTasks(Planted):
    """n samples of each of TASKS per planted folder; masks on the inpainting samples."""

    name = "pack-three"

    def unit_promised(self, k):
        n = storage.read_marker(self.params["dirs"][k])["counts"]["samples"]
        return {t: n for t in TASKS}

    def unit_samples(self, k):
        name = self.params["dirs"][k].rsplit("/", 1)[-1]
        rng = np.random.default_rng(len(name))
        for i in range(self.unit_promised(k)[TASKS[0]]):
            for t in TASKS:
                yield make_sample(i, rng, task=t, key=f"{name}-{t}-{i}", with_mask=t != "general_editing")


@pytest.fixture
def report_set(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"), shards={"maxcount": 4}, models_dir=str(tmp_path / "none"),
                    supervision={"enabled": True})
    rep = LocalExecutor().run(ThreeTasks(cfg, dirs=[plant(tmp_path, "a", 5), plant(tmp_path, "b", 3)]))
    return rep.outputs[0]


def test_the_report_shows_every_task_its_drops_and_scores(report_set):
    marker = storage.read_marker(report_set)
    page = (storage.absolute(report_set) + "/report.html")
    html = open(page).read()
    checked = marker["supervision"]["checked"]
    assert set(checked) == set(TASKS)
    for t in TASKS:
        assert f">{t}</td><td class=\"n\">{checked[t]}</td>" in html  # the drops table: checked per task
        for reason, n in marker["supervision"]["dropped"].get(t, {}).items():
            assert f"{reason} {n}" in html
    assert set(marker["counts_by_task"]) == {"inpainting", "outpainting"}
    assert marker["supervision"]["dropped"]["general_editing"] == {"incoherent_pair": 8}
    for t in TASKS:  # a task whose samples were all dropped is on the page too
        assert f'id="task-{t}"' in html
    thumbs = [r["thumb"] for r in read_samples(report_set, ["thumb"]).to_pylist() if r["thumb"]]
    assert thumbs and all(f'src="{t}"' in html for t in thumbs[:8])
    assert "model absent" in html and "<svg" in html


@pytest.mark.slow
def test_the_report_reads_in_a_browser_at_a_laptops_size(report_set):
    from tests.browser import chromium_page

    with chromium_page(1366, 768) as (page, errors):
        page.goto("file://" + storage.absolute(report_set) + "/report.html")
        page.wait_for_load_state("load")
        for t in TASKS:
            heading = page.locator(f"#task-{t}")
            heading.scroll_into_view_if_needed()
            assert heading.is_visible()
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_function("[...document.images].every(i => i.complete)")
        widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        assert widths and min(widths) > 0  # every lazy thumbnail loaded
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366  # no sideways scrolling
    assert errors == []


@pytest.mark.parametrize(("name", "expected"), [
    ("band-union-find", "an algorithm, no weights"), ("map-templates", "an algorithm, no weights"),
    ("face-erased-reference", "an algorithm, no weights"), ("scribble-hed", "an algorithm, no weights"),
    ("offline-dct-hist", "offline fallback"), ("sam-vit_b", "segment-anything"), ("lama-big-lama", "big-lama"),
    ("hed-controlnet-apache2", "ControlNetHED"), ("face:arcface", "ArcFace"), ("chat:qwen2", "chat endpoint"),
    ("detector:owlv2-base-patch16-ensemble+sam-vit_b", "owlv2"), ("rapidocr-ppocrv6", "PaddleOCR"),
    ("pair-classifier:none", "no pair classifier"), ("pair-classifier:general_editing", "your labels"),
    ("regions-felzenszwalb+mediapipe-selfie-segmentation", "MediaPipe"),
])
def test_the_models_table_names_a_models_licence_and_calls_the_rest_algorithms(name, expected):
    from store.set_report import _licence

    assert expected in _licence(name)
