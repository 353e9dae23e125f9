"""Warnings that a peer can cause many times over, logged at a bounded rate.

An attacker (or an outage) can make the engine refuse or drop thousands of connections in a
second; one WARNING line each would bury the log and cost the event loop more than the event
itself. A :class:`WarningBudget` logs the first ``burst`` events of each ``interval`` as they
come and the rest at DEBUG only; the next WARNING line says how many were left out, and a long
run of left-out events still gets one WARNING per ``summary_every`` of them. No I/O beyond
``logging``, no trio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import final


@final
class WarningBudget:
    """At most ``burst`` WARNING lines per ``interval`` seconds for one kind of event.

    Args:
        logger: where the lines go.
        interval: the window, in seconds.
        burst: lines logged per window; the rest are counted (and logged at DEBUG).
        summary_every: one of every this many left-out events is logged anyway, with the
            count, so a flood that never pauses still shows in the log.
        clock: seconds, monotonic (tests pass their own).

    Raises:
        ValueError: ``interval`` or ``burst`` is not positive.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        burst: int = 5,
        summary_every: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or burst < 1 or summary_every < 1:
            raise ValueError("a warning budget needs a positive interval, burst and summary")
        self._summary_every = summary_every
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._window_start = -float("inf")
        self._logged = 0
        #: Events not logged since the last line.
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> bool:
        """Log ``msg % args`` as a WARNING if the budget allows, else count it. Returns
        whether it was logged."""
        now = self._clock()
        if now - self._window_start >= self._interval:
            self._window_start = now
            self._logged = 0
        if self._logged >= self._burst and self.suppressed + 1 < self._summary_every:
            self.suppressed += 1
            self._logger.debug(msg, *args)
            return False
        self._logged += 1
        if self.suppressed:
            msg += " (%d more like this were not logged since the previous line)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._logger.warning(msg, *args)
        return True
