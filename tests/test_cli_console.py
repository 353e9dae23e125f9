"""The CLI's stderr: a progress bar and any other line never share a line."""

from __future__ import annotations

import io
import logging

from iii_trio._cli._console import Console, ConsoleLogHandler, Progress


def test_log_and_error_lines_never_share_the_progress_line() -> None:
    stream = io.StringIO()
    console = Console(stream)
    progress = Progress(console, "sending", enabled=True)
    logger = logging.getLogger("tests.cli_console")
    handler = ConsoleLogHandler(console)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        progress(1_000_000, 2_000_000)
        logger.warning("a log record in the middle")
        progress(2_000_000, 2_000_000)  # the last step is always drawn
        console.line("error: after the bar")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().split("\n")
    assert lines[0].startswith("\rsending [###############---------------]")
    assert lines[1] == "a log record in the middle"
    assert lines[2].startswith("\rsending [##############################]")
    assert lines[3:] == ["error: after the bar", ""]


def test_a_disabled_bar_writes_nothing() -> None:
    stream = io.StringIO()
    console = Console(stream)
    progress = Progress(console, "sending", enabled=False)
    progress(1, 2)
    progress(2, 2)
    progress.finish()
    console.line("done")
    assert stream.getvalue() == "done\n"


def test_finishing_a_bar_twice_ends_its_line_once() -> None:
    stream = io.StringIO()
    console = Console(stream)
    progress = Progress(console, "receiving", enabled=True)
    progress(5, None)
    progress.finish()
    progress.finish()
    assert stream.getvalue().count("\n") == 1 and stream.getvalue().startswith("\rreceiving ")
