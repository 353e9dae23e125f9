"""Exit codes, and the one ``error: ...`` line that reports a failure."""

from __future__ import annotations

import os
import traceback
from typing import Final

import trio

from .._errors import (
    ConnectError,
    IIIError,
    InvocationError,
    InvocationFailed,
    InvocationTimeout,
    Unauthorized,
)
from ._console import Console

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECT: Final = 3
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = """\
exit codes:
  0    success
  1    the engine or the function answered with an error; or a local error while running
       (a file could not be read or written, the engine could not listen on its port)
  2    usage: bad arguments, JSON, URL, timeout or size; an input file that is missing or
       unreadable, an output directory that does not exist (checked before connecting)
  3    cannot connect: the engine is unreachable, refused the WebSocket upgrade, or
       refused the token (HTTP 401: missing or rejected)
  130  interrupted (Ctrl-C)
Every failure prints one line 'error: ...' on stderr; -v adds the details."""


class CliError(Exception):
    """A failure the CLI reports as one line, with its own exit code.

    Attributes:
        exit_code: the process's exit status.
    """

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    """A usage error (exit 2)."""
    return CliError(message, exit_code=EXIT_USAGE)


def local_file_error(
    path: str, action: str, reason: str | OSError, *, exit_code: int = EXIT_ERROR
) -> CliError:
    """An error about a file on this machine, naming the path and the system's reason."""
    if isinstance(reason, OSError):
        reason = os.strerror(reason.errno).lower() if reason.errno else str(reason)
    return CliError(f"local file {path!r}: cannot {action} it: {reason}", exit_code=exit_code)


def report(exc: BaseException, console: Console, *, verbose: bool, has_timeout: bool) -> int:
    """Print the one ``error:`` line for ``exc`` (after the details when ``verbose``) and
    return the exit code. ``has_timeout``: the command takes ``--timeout`` (named in the
    hint for a timed-out call)."""
    leaf = _most_telling(exc)
    code, message = _describe(leaf, has_timeout=has_timeout)
    if verbose:
        console.block("".join(traceback.format_exception(exc)))
        if isinstance(leaf, InvocationFailed) and leaf.stacktrace:
            console.block(f"remote stack trace:\n{leaf.stacktrace}")
    console.line(f"error: {message}")
    return code


def _describe(exc: BaseException, *, has_timeout: bool) -> tuple[int, str]:
    if isinstance(exc, CliError):
        return exc.exit_code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, Unauthorized):
        return EXIT_CONNECT, _unauthorized(exc)
    if isinstance(exc, ConnectError):
        return EXIT_CONNECT, str(exc)
    if isinstance(exc, InvocationTimeout) and has_timeout:
        return EXIT_ERROR, f"{exc.code}: {exc.message} (a longer --timeout may help)"
    if isinstance(exc, InvocationError):
        return EXIT_ERROR, f"{exc.code}: {exc.message}"
    if isinstance(exc, IIIError | trio.BrokenResourceError | OSError):
        return EXIT_ERROR, str(exc) or type(exc).__name__
    return EXIT_ERROR, (
        f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback, "
        "and please report it)"
    )


def _unauthorized(exc: Unauthorized) -> str:
    if exc.token_sent:
        return (
            f"token rejected by the engine at {exc.url} (HTTP 401): "
            "check --token or $III_TOKEN against the engine's token"
        )
    return (
        f"token missing: the engine at {exc.url} requires one (HTTP 401); "
        "pass --token or set $III_TOKEN"
    )


#: Which failure explains a group best, most telling first.
_PRIORITY: Final = (
    KeyboardInterrupt,
    CliError,
    ConnectError,
    InvocationError,
    IIIError,
    trio.BrokenResourceError,
    OSError,
)


def _most_telling(exc: BaseException) -> BaseException:
    """The leaf of ``exc`` (a group, maybe nested) that best says what went wrong;
    cancellations never do."""
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if not leaves:
        return exc
    for kind in _PRIORITY:
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
