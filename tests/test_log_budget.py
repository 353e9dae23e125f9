"""WarningBudget: a bounded number of WARNING lines per window, the rest counted."""

from __future__ import annotations

import logging

import pytest

from iii_trio._log_budget import WarningBudget


def test_a_burst_then_counted_then_a_new_window(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    budget = WarningBudget(logging.getLogger("t"), interval=10, burst=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        logged = [budget.warning("dropped %s", n) for n in range(5)]
        assert logged == [True, True, False, False, False]
        assert budget.suppressed == 3
        now[0] = 9.9
        assert not budget.warning("dropped %s", 5)  # same window
        now[0] = 10.0
        assert budget.warning("dropped %s", 6)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0",
        "dropped 1",
        "dropped 6 (4 more like this were not logged since the previous line)",
    ]
    assert budget.suppressed == 0


def test_left_out_lines_go_to_debug_and_a_flood_still_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = WarningBudget(logging.getLogger("t"), burst=1, summary_every=10, clock=lambda: 0.0)
    with caplog.at_level(logging.DEBUG, logger="t"):
        logged = [budget.warning("refused %s", n) for n in range(21)]
    assert [n for n, ok in enumerate(logged) if ok] == [0, 10, 20]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "refused 0",
        "refused 10 (9 more like this were not logged since the previous line)",
        "refused 20 (9 more like this were not logged since the previous line)",
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == [f"refused {n}" for n in range(21) if n % 10]


@pytest.mark.parametrize(
    ("interval", "burst", "summary_every"), [(0, 1, 1), (1, 0, 1), (-1, 5, 1), (1, 1, 0)]
)
def test_bounds_must_be_positive(interval: float, burst: int, summary_every: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        WarningBudget(
            logging.getLogger("t"), interval=interval, burst=burst, summary_every=summary_every
        )
