"""Peak RSS per item, measured by the executor's Worker in the process that runs the item."""
import time

import numpy as np
import pytest

from runtime import rss
from runtime.executors import LocalExecutor, Worker
from runtime.stage import Execution, ItemReport
from schemas.config import RunConfig
from tests.runtime.toy_stage import ToyStage

BIG_MB = 200


class Allocating(ToyStage):
    """Item k holds `mb[k]` MiB of touched memory for a moment, then frees it before returning."""

    name = "toy-alloc"

    def run(self, k: int) -> ItemReport:
        mb = self.params["mb"][k]
        a = np.ones(mb * 2**20 // 8) if mb else None  # np.ones writes every page: they are resident
        rep = super().run(k)
        if a is not None:
            time.sleep(0.15)  # a few sampling intervals, for the sampling path
        del a
        return rep


@pytest.mark.parametrize("reset", [True, False], ids=["high-water-mark", "sampling-thread"])
def test_an_items_peak_shows_the_memory_it_held_and_a_small_item_shows_none(tmp_path, monkeypatch, reset):
    if rss.current_mb() is None:
        pytest.skip("no /proc on this system")
    if not reset:  # as on a system that refuses the high-water mark's reset
        monkeypatch.setattr(rss, "_reset_peak", lambda: False)
    worker = Worker(Allocating(RunConfig(root=str(tmp_path / "root")), n=2, mb=[BIG_MB, 0]))
    big, small = worker.run(0), worker.run(1)
    assert big.peak_rss_mb - big.rss_before_mb >= 0.9 * BIG_MB
    assert small.peak_rss_mb - small.rss_before_mb < BIG_MB / 4  # the big array's pages are gone
    assert small.rss_before_mb < big.peak_rss_mb - BIG_MB / 2  # freed before the small item started


def test_the_stage_execution_keeps_the_largest_peak_and_growth_of_one_item(tmp_path):
    if rss.current_mb() is None:
        pytest.skip("no /proc on this system")
    rep = LocalExecutor().run(Allocating(RunConfig(root=str(tmp_path / "root")), n=3, mb=[0, BIG_MB, 0]))
    ex = rep.execution
    assert ex.rss_growth_mb >= 0.9 * BIG_MB and ex.peak_rss_mb >= ex.rss_growth_mb


def test_execution_of_item_reports_maxes_peaks_and_counts_nodes_over_items_that_ran():
    items = [ItemReport(stage="s", item=0, rss_before_mb=100, peak_rss_mb=150, node="a"),
             ItemReport(stage="s", item=1, rss_before_mb=300, peak_rss_mb=320, node="b"),
             ItemReport(stage="s", item=2, skipped=True, node="c"),
             ItemReport(stage="s", item=3)]  # not measured (no /proc): left out
    ex = Execution.of(items)
    assert (ex.peak_rss_mb, ex.rss_growth_mb, ex.nodes) == (320, 50, 2)
    assert Execution.of([]).peak_rss_mb == 0.0
