"""``iii-trio`` (also ``python -m iii_trio``): run an engine, or talk to one.

Exit codes:

- 0: success.
- 1: the engine or the function answered with an error; or a local error while running (a
  file could not be read or written, the engine could not listen on its port).
- 2: usage: bad arguments, JSON, URL, timeout or size; an input file that is missing or
  unreadable, an output directory that does not exist. All checked before connecting.
- 3: cannot connect: the engine is unreachable, refused the WebSocket upgrade, or refused
  the token (HTTP 401: missing or rejected).
- 130: interrupted (Ctrl-C).

Every failure prints exactly one line ``error: ...`` on stderr, never a traceback;
``-v``/``--verbose`` adds the details. Progress bars and log records share stderr through
one :class:`Console`, so a log line never lands on a progress line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import trio

from ._args import LOG_LEVELS, parser
from ._client_cmds import (
    check_client,
    check_receive,
    check_send,
    run_call,
    run_listing,
    run_receive,
    run_send,
)
from ._console import Console, ConsoleLogHandler
from ._engine_cmd import check_engine, run_demo, run_engine
from ._report import EXIT_OK, report, usage_error

__all__ = ["main"]

Check = Callable[[argparse.Namespace], None]
Run = Callable[[argparse.Namespace, Console], Awaitable[int]]


_parser = parser  # the name tests and tools import


def _no_check(args: argparse.Namespace) -> None:
    pass


#: Each command: a synchronous check (usage errors, before anything connects) and its run.
_COMMANDS: dict[str, tuple[Check, Run]] = {
    "engine": (check_engine, run_engine),
    "demo": (_no_check, run_demo),
    "call": (check_client, run_call),
    "functions": (check_client, run_listing),
    "workers": (check_client, run_listing),
    "channels": (check_client, run_listing),
    "routes": (check_client, run_listing),
    "send": (check_send, run_send),
    "receive": (check_receive, run_receive),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    console = Console(sys.stderr)
    with _logging_to(console):
        try:
            _set_log_level(args)
            check, run = _COMMANDS[args.command]
            check(args)
            return trio.run(run, args, console)
        except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
            return report(exc, console, verbose=args.verbose, has_timeout="timeout" in args)


@contextmanager
def _logging_to(console: Console) -> Iterator[None]:
    """Log records through ``console`` while the command runs; the root logger is as it was
    afterwards (``main`` may run inside a bigger program, or a test)."""
    handler = ConsoleLogHandler(console)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _set_log_level(args: argparse.Namespace) -> None:
    level = args.log_level or os.environ.get("III_LOG_LEVEL")
    if level is None:
        level = "INFO" if args.command in ("engine", "demo") else "WARNING"
    elif level.upper() not in LOG_LEVELS:
        raise usage_error(f"$III_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    logging.getLogger().setLevel(level.upper())


if __name__ == "__main__":
    sys.exit(main())
