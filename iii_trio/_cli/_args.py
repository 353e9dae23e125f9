"""The ``iii-trio`` argument parser, and the value types that reject bad input early."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Final, NoReturn

import attrs

from .._version import __version__
from ..engine import EngineConfig
from ..engine._config import DEFAULT_HOST, DEFAULT_HTTP_PORT, DEFAULT_PORT
from ..worker._worker import DEFAULT_URL
from ._report import EXIT_CODES, EXIT_USAGE

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Older, shorter names of some engine flags, still accepted.
_FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    "channel_buffer_bytes": ("--channel-buffer",),
    "channel_memory_limit": ("--channel-memory",),
}


def _field_descriptions(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Attributes:`` section, one line each."""
    found: dict[str, str] = {}
    lines = doc.split("Attributes:", 1)[-1].splitlines()
    current = ""
    for line in lines:
        stripped = line.strip()
        head, sep, rest = stripped.partition(": ")
        if (
            sep
            and head.isidentifier()
            and line.startswith(" " * 8)
            and not line.startswith(" " * 12)
        ):
            current = head
            found[current] = rest
        elif current and stripped:
            found[current] += " " + stripped
    return found


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one ``error:`` line (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


# --- value types: each raises ArgumentTypeError, which argparse reports as a usage error ----


def seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    return _positive(text, "a number of seconds")


def optional_seconds(text: str) -> float | None:
    """A number of seconds > 0, or ``off``/``0`` for none."""
    if text.strip().lower() in ("off", "0", "none"):
        return None
    return _positive(text, "a number of seconds (or 'off')")


def megabytes(text: str) -> float:
    """A finite number of megabytes, at least one byte's worth."""
    value = _positive(text, "a number of megabytes")
    if value * 1024 * 1024 < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte, not {text!r} MB")
    return value


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be {what} > 0, not {text!r}")
    return value


def json_value(text: str) -> Any:
    """Any JSON value."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def json_object(text: str) -> dict[str, Any]:
    """A JSON object."""
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'must be a JSON object such as \'{{"name": "x"}}\', not {type(value).__name__} '
            f"{text!r}"
        )
    return value


# --- the parser ----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The whole ``iii-trio`` command line."""
    top = _Parser(
        prog="iii-trio",
        description="A Trio-native iii engine and worker toolkit.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"iii_trio {__version__}")
    _add_output_options(top, top_level=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --log-level and -v work before or after the command name.
    common = _Parser(add_help=False)
    _add_output_options(common, top_level=False)
    client = _Parser(add_help=False)
    _add_client_options(client)

    def command(name: str, helptext: str, *parents: _Parser) -> _Parser:
        made: _Parser = sub.add_parser(
            name,
            parents=[common, *parents],
            help=helptext,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return made

    _add_engine(command("engine", "run an engine until Ctrl-C / SIGTERM"))
    _add_demo(command("demo", "embedded engine + two workers streaming a file"))
    _add_call(command("call", "call a function and print its result", client))
    for name, helptext in (
        ("functions", "list registered functions"),
        ("workers", "list connected workers"),
        ("channels", "list live channels with bytes moved"),
        ("routes", "list the HTTP routes bound with the http trigger type"),
    ):
        listing = command(name, helptext, client)
        listing.add_argument("--json", dest="json_output", action="store_true", help="print JSON")
    _add_send(command("send", "stream a file to a function (it gets {'reader': ...})", client))
    _add_receive(
        command("receive", "have a function stream a file to you (it gets {'writer': ...})", client)
    )
    return top


def _add_output_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Given after the command name, an option must not reset what was given before it.
    parser.add_argument(
        "--log-level",
        default=None if top_level else argparse.SUPPRESS,
        choices=LOG_LEVELS,
        help="logging level (default $III_LOG_LEVEL, else INFO for engine and demo, "
        "WARNING otherwise)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="on failure, print the details (traceback, remote stack trace) too",
    )


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"engine URL (default $III_URL or {DEFAULT_URL})")
    parser.add_argument(
        "--token",
        help="the engine's token (default $III_TOKEN; prefer it: a command line is visible "
        "to other users of this machine)",
    )


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar on stderr (default: only when stderr is a terminal)",
    )
    parser.add_argument(
        "--quiet", dest="progress", action="store_false", help="same as --no-progress"
    )


def _add_engine(engine: argparse.ArgumentParser) -> None:
    engine.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})"
    )
    engine.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    engine.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (default: $III_TOKEN)"
    )
    # Every other EngineConfig field is a flag of its own (--max-functions-per-worker, ...),
    # with the field's description as its help: every limit can be set from here.
    descriptions = _field_descriptions(EngineConfig.__doc__ or "")
    for field in attrs.fields(EngineConfig):
        if field.name in _EXPLICIT_FLAGS or field.type in (bool, "bool"):
            continue
        flags = ["--" + field.name.replace("_", "-"), *_FLAG_ALIASES.get(field.name, ())]
        kind = field.type
        value_type: Any = (
            int if kind in (int, "int") else optional_seconds if "None" in str(kind) else float
        )
        default = field.default
        text = descriptions.get(field.name, "").rstrip(".").replace("``None``", "off")
        text = text.replace("``", "")
        shown = (
            "off" if default is None else f"{default:g}" if isinstance(default, float) else default
        )
        engine.add_argument(
            *flags,
            dest=field.name,
            type=value_type,
            default=default,
            help=f"{text} (default {shown})",
        )
    _add_http(engine, descriptions)
    engine.add_argument(
        "--no-tune-allocator",
        dest="tune_allocator",
        action="store_false",
        help="keep glibc's malloc defaults (see iii_trio.tune_allocator; default: tuned)",
    )


#: EngineConfig fields with flags of their own (not generated from the field's type).
_EXPLICIT_FLAGS: Final = frozenset({"host", "port", "token", "http_host", "http_port"})


def _add_http(engine: argparse.ArgumentParser, descriptions: dict[str, str]) -> None:
    """The HTTP server's address, and its on/off settings (every bool field of
    EngineConfig is an on/off flag pair)."""
    engine.add_argument(
        "--http-host",
        dest="http_host",
        default=DEFAULT_HOST,
        help=f"address the HTTP server (http triggers) binds (default {DEFAULT_HOST})",
    )
    engine.add_argument(
        "--http-port",
        dest="http_port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"TCP port of the HTTP server; 0 picks a free one (default {DEFAULT_HTTP_PORT})",
    )
    engine.add_argument(
        "--no-http",
        dest="http_port",
        action="store_const",
        const=None,
        help="serve no HTTP (http triggers stay parked)",
    )
    for field in attrs.fields(EngineConfig):
        if field.type not in (bool, "bool"):
            continue
        text = descriptions.get(field.name, "").rstrip(".").replace("``", "")
        engine.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            action=argparse.BooleanOptionalAction,
            default=field.default,
            help=f"{text} (default {'on' if field.default else 'off'})",
        )


def _add_demo(demo: argparse.ArgumentParser) -> None:
    demo.add_argument(
        "--size-mb", type=megabytes, default=64.0, help="megabytes to stream (> 0, default 64)"
    )
    _add_progress(demo)


def _add_call(call: argparse.ArgumentParser) -> None:
    call.add_argument("function", help="function id, e.g. files::process")
    call.add_argument("--json", type=json_value, help="payload as JSON (default null)")
    call.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds to wait (> 0, default 30)"
    )
    call.add_argument("--void", action="store_true", help="fire and forget: no result is awaited")


def _add_send(send: argparse.ArgumentParser) -> None:
    send.add_argument("file", help="the file to send")
    send.add_argument("--to", required=True, metavar="FUNCTION", help="the function to call")
    send.add_argument(
        "--json",
        type=json_object,
        default={},
        help="more payload fields, as a JSON object ('name' defaults to the file's name)",
    )
    _add_transfer_options(send)


def _add_receive(receive: argparse.ArgumentParser) -> None:
    receive.add_argument(
        "--from", dest="source", required=True, metavar="FUNCTION", help="the function to call"
    )
    receive.add_argument("-o", "--output", required=True, help="file to write")
    receive.add_argument(
        "--json", type=json_object, default={}, help="more payload fields, as a JSON object"
    )
    _add_transfer_options(receive)


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        help="seconds the call may take, transfer included (> 0, default 30)",
    )
    _add_progress(parser)
