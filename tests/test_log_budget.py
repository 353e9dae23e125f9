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


@pytest.mark.parametrize(("interval", "burst"), [(0, 1), (1, 0), (-1, 5)])
def test_bounds_must_be_positive(interval: float, burst: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        WarningBudget(logging.getLogger("t"), interval=interval, burst=burst)
