import pytest

from bench._timing import Measured, Side, interleave, ratio, report


class FakeClock:
    """Returns planted instants; each run's time is the difference of the two readings around it."""

    def __init__(self, durations):
        self.instants, t = [], 0.0
        for d in durations:
            self.instants += [t, t + d]
            t += d + 100.0  # gaps between runs never count
        self.i = 0

    def __call__(self):
        self.i += 1
        return self.instants[self.i - 1]


def test_sides_run_interleaved_round_by_round():
    calls = []
    sides = [Side(n, lambda n=n: calls.append(n)) for n in ("A", "B", "C")]
    interleave(sides, rounds=3, warmup=1)
    assert calls == ["A", "B", "C"] * 4


def test_best_median_and_ratio_of_bests_on_planted_times():
    # rounds: (A, B) = (5, 9), (2, 4), (7, 3), (4, 8)
    clock = FakeClock([5, 9, 2, 4, 7, 3, 4, 8])
    t = interleave([("A", lambda: "a"), ("B", lambda: "b")], rounds=4, clock=clock)
    assert t["A"].seconds == [5, 2, 7, 4] and t["B"].seconds == [9, 4, 3, 8]
    assert (t["A"].best, t["B"].best) == (2, 3)
    assert (t["A"].median, t["B"].median) == (4.5, 6)
    assert ratio(t, "B", "A") == 1.5  # best over best, not best over the same round's time
    assert t["A"].result == "a"
    lines = report(t, baseline="A")
    assert "best    2.000 s" in lines[0] and "median    4.500 s" in lines[0] and "x the baseline" not in lines[0]
    assert "1.50x the baseline's best" in lines[1]


def test_warmup_rounds_are_not_counted_and_setup_is_untimed():
    clock = FakeClock([50, 60, 1, 2, 3, 4])
    made = []

    def setup():
        made.append(len(made))
        return made[-1]

    t = interleave([Side("A", lambda k: k, setup=setup), Side("B", lambda: None)], rounds=2, warmup=1, clock=clock)
    assert t["A"].seconds == [1, 3] and t["B"].seconds == [2, 4]
    assert made == [0, 1, 2] and t["A"].result == 2  # a fresh value each run, passed to run


def test_self_timed_sides_report_their_own_seconds():
    clock = FakeClock([10, 10, 10, 10])
    t = interleave([("A", lambda: Measured(0.5, {"rss": 1})), ("B", lambda: Measured(0.25))], rounds=2,
                   clock=clock)
    assert t["A"].seconds == [0.5, 0.5] and t["A"].result == {"rss": 1}
    assert ratio(t, "B", "A") == 0.5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        interleave([("A", lambda: None), ("A", lambda: None)])
    with pytest.raises(ValueError, match="rounds"):
        interleave([("A", lambda: None)], rounds=0)
