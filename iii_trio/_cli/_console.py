"""The CLI's stderr: a progress bar redrawn in place, and whole lines that never share it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Final, TextIO, final

#: Seconds between two redraws of a progress bar.
_REDRAW_EVERY: Final = 0.1
_BAR_WIDTH: Final = 30


@final
class Console:
    """Writes to ``stream`` (stderr). A progress bar redraws one line in place with ``\\r``;
    any other line (a log record, an error, a status) first ends that line, so a bar and a
    message never share one. Log records may come from worker threads, hence the lock."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar_open = False
        self._lock = threading.Lock()

    @property
    def is_terminal(self) -> bool:
        try:
            return self._stream.isatty()
        except ValueError:  # closed
            return False

    def draw(self, text: str) -> None:
        """(Re)draw the progress line."""
        with self._lock:
            self._stream.write("\r" + text)
            self._stream.flush()
            self._bar_open = True

    def end_bar(self) -> None:
        """Finish the progress line, if one is open: what follows starts a new line."""
        with self._lock:
            self._end_bar()

    def line(self, text: str) -> None:
        """Write ``text`` as a line of its own."""
        self.block(text + "\n")

    def block(self, text: str) -> None:
        """Write ``text`` (whole lines) after ending any progress line."""
        with self._lock:
            self._end_bar()
            self._stream.write(text)
            self._stream.flush()

    def _end_bar(self) -> None:
        if self._bar_open:
            self._stream.write("\n")
            self._bar_open = False


@final
class Progress:
    """A progress callback (``progress(done, total)``) drawing a bar on a :class:`Console`,
    at most every 0.1 s; does nothing unless ``enabled``."""

    def __init__(self, console: Console, label: str, *, enabled: bool) -> None:
        self._console = console
        self._label = label
        self._enabled = enabled
        self._start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._last < _REDRAW_EVERY and done != total):
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9) / 1e6
        if total:
            filled = int(_BAR_WIDTH * done / total)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            text = f"{self._label} [{bar}] {done / 1e6:8.1f}/{total / 1e6:.1f} MB {rate:7.1f} MB/s"
        else:
            text = f"{self._label} {done / 1e6:8.1f} MB {rate:7.1f} MB/s"
        self._console.draw(text)

    def finish(self) -> None:
        if self._enabled:
            self._console.end_bar()


@final
class ConsoleLogHandler(logging.Handler):
    """Sends log records through a :class:`Console`, so they never land on a progress line."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._console.line(self.format(record))
        except Exception:
            self.handleError(record)
