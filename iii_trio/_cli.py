"""``iii-trio`` (also ``python -m iii_trio``): run an engine, or talk to one.

Exit codes: 0 success; 1 the engine answered with an error (printed); 2 bad usage;
3 the engine could not be reached; 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from . import __version__
from ._allocator import tune_allocator
from ._errors import ConnectError, IIIError, InvocationError
from .engine import EngineConfig, open_engine
from .engine._config import DEFAULT_HOST, DEFAULT_PORT
from .worker import connect_worker, receive_file, send_file
from .worker._client import DEFAULT_URL

logger = logging.getLogger("iii_trio.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def _engine_url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("III_URL") or DEFAULT_URL)


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or forced)."""

    def __init__(self, label: str, *, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done != total):
            return
        self._last = now
        rate = done / max(now - self.start, 1e-9) / 1e6
        if total:
            filled = int(30 * done / total)
            bar = "#" * filled + "-" * (30 - filled)
            text = f"\r{self.label} [{bar}] {done / 1e6:8.1f}/{total / 1e6:.1f} MB {rate:7.1f} MB/s"
        else:
            text = f"\r{self.label} {done / 1e6:8.1f} MB {rate:7.1f} MB/s"
        sys.stderr.write(text)
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --- engine --------------------------------------------------------------------------------


async def _run_engine(args: argparse.Namespace) -> int:
    try:
        config = EngineConfig(
            host=args.host,
            port=args.port,
            token=args.token or os.environ.get("III_TOKEN") or None,
            invocation_timeout=args.invocation_timeout,
            channel_ttl=args.channel_ttl,
            channel_buffer_bytes=args.channel_buffer,
            channel_memory_limit=args.channel_memory,
            max_message_size=args.max_message_size,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.tune_allocator and tune_allocator():
        logger.info("allocator: freed memory kept up to 64 MiB (see iii_trio.tune_allocator)")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_engine(config) as engine:
            print(
                f"iii_trio {__version__} engine listening on {engine.url}\n"
                f"  token: {'required' if config.token else 'off'}"
                f"   max message: {config.max_message_size // (1024 * 1024)} MiB"
                f"   channel buffer: {config.channel_buffer_bytes // 1024} KiB"
                f" (all channels: {config.channel_memory_limit // (1024 * 1024)} MiB)"
                f"   channel TTL: {config.channel_ttl:g}s"
                f"   invocation timeout: {config.invocation_timeout:g}s\n"
                "  Ctrl-C or SIGTERM stops it.",
                flush=True,
            )
            async for signum in signals:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                break
            await engine.shutdown()
    print("engine stopped", flush=True)
    return 0


# --- demo ----------------------------------------------------------------------------------


async def _run_demo(args: argparse.Namespace) -> int:
    """An embedded engine and two workers: one streams a generated file through a channel,
    the other stores it and reports its sha256."""
    size = int(args.size_mb * 1024 * 1024)
    async with open_engine(port=0) as engine:
        print(f"embedded engine on {engine.url}")
        async with (
            connect_worker(engine.url, name="demo-store") as store,
            connect_worker(engine.url, name="demo-client") as client,
        ):

            async def checksum(payload: dict[str, Any]) -> dict[str, Any]:
                reader = payload["reader"]
                digest = hashlib.sha256()
                received = 0
                progress_notes: list[str] = []
                reader.on_message(progress_notes.append)
                async for chunk in reader:
                    digest.update(chunk)
                    received += len(chunk)
                return {"size": received, "sha256": digest.hexdigest(), "notes": progress_notes}

            store.register_function("demo::checksum", checksum)
            await engine.wait_function("demo::checksum")
            sent = hashlib.sha256()
            progress = _Progress("sending", enabled=not args.quiet)
            started = time.monotonic()
            result: dict[str, Any] = {}
            async with client.open_channel() as channel, trio.open_nursery() as nursery:

                async def call() -> None:
                    result.update(
                        await client.trigger("demo::checksum", {"reader": channel.reader_ref})
                    )

                nursery.start_soon(call)
                await channel.writer.send_message("starting")
                block = os.urandom(1024 * 1024)
                done = 0
                while done < size:
                    piece = block[: min(len(block), size - done)]
                    sent.update(piece)
                    await channel.writer.send_all(piece)
                    done += len(piece)
                    progress(done, size)
                await channel.writer.send_message("done")
                await channel.writer.aclose()
            progress.finish()
            elapsed = time.monotonic() - started
            print(f"sent     {size} bytes  sha256 {sent.hexdigest()}")
            print(
                f"received {result['size']} bytes  sha256 {result['sha256']}  notes {result['notes']}"
            )
            print(f"{size / elapsed / 1e6:.1f} MB/s through the engine ({elapsed:.2f}s)")
            return 0 if result["sha256"] == sent.hexdigest() else EXIT_ERROR


# --- client commands -----------------------------------------------------------------------


async def _with_worker(args: argparse.Namespace, body: Callable[[Any], Awaitable[int]]) -> int:
    async with connect_worker(
        _engine_url(args), name=f"iii-trio-cli:{os.getpid()}", reconnect=False
    ) as worker:
        return await body(worker)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


async def _run_call(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.json) if args.json is not None else None
    except json.JSONDecodeError as exc:
        print(f"--json is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def body(worker: Any) -> int:
        result = await worker.trigger(
            args.function, payload, timeout=args.timeout, action="void" if args.void else None
        )
        if not args.void:
            _print_json(result)
        return 0

    return await _with_worker(args, body)


async def _run_listing(args: argparse.Namespace) -> int:
    function, key, columns = {
        "functions": (
            "engine::functions::list",
            "functions",
            ("function_id", "worker_name", "description"),
        ),
        "workers": (
            "engine::workers::list",
            "workers",
            ("name", "id", "runtime", "function_count", "active_invocations"),
        ),
        "channels": (
            "engine::channels::list",
            "channels",
            ("channel_id", "state", "bytes_in", "bytes_out", "buffered_bytes", "age_s"),
        ),
    }[args.command]

    async def body(worker: Any) -> int:
        listed = await worker.trigger(function, {})
        rows = listed[key]
        if args.json_output:
            _print_json(rows)
        else:
            _table(rows, columns)
        return 0

    return await _with_worker(args, body)


async def _run_send(args: argparse.Namespace) -> int:
    if not await trio.Path(args.file).is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return EXIT_USAGE

    async def body(worker: Any) -> int:
        progress = _Progress(f"sending {os.path.basename(args.file)}", enabled=not args.quiet)
        async with worker.open_channel() as channel, trio.open_nursery() as nursery:
            result: dict[str, Any] = {}

            async def call() -> None:
                extra = json.loads(args.json) if args.json else {}
                result["value"] = await worker.trigger(
                    args.to,
                    {**extra, "reader": channel.reader_ref, "name": os.path.basename(args.file)},
                )

            nursery.start_soon(call)
            await send_file(args.file, channel.writer, progress=progress)
        progress.finish()
        _print_json(result["value"])
        return 0

    return await _with_worker(args, body)


async def _run_receive(args: argparse.Namespace) -> int:
    async def body(worker: Any) -> int:
        progress = _Progress(f"receiving {os.path.basename(args.output)}", enabled=not args.quiet)
        async with worker.open_channel() as channel, trio.open_nursery() as nursery:
            result: dict[str, Any] = {}

            async def call() -> None:
                extra = json.loads(args.json) if args.json else {}
                result["value"] = await worker.trigger(
                    args.source, {**extra, "writer": channel.writer_ref}
                )

            nursery.start_soon(call)
            size = await receive_file(channel.reader, args.output, progress=progress)
        progress.finish()
        print(f"wrote {size} bytes to {args.output}", file=sys.stderr)
        if result.get("value") is not None:
            _print_json(result["value"])
        return 0

    return await _with_worker(args, body)


# --- wiring --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iii-trio", description="A Trio-native iii engine and worker toolkit."
    )
    parser.add_argument("--version", action="version", version=f"iii_trio {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("III_LOG_LEVEL"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO for engine and demo, WARNING otherwise)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --log-level works before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level",
    )

    engine = sub.add_parser("engine", parents=[common], help="run an engine until Ctrl-C / SIGTERM")
    engine.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})"
    )
    engine.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    engine.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (default: $III_TOKEN)"
    )
    defaults = EngineConfig()
    engine.add_argument(
        "--invocation-timeout",
        type=float,
        default=defaults.invocation_timeout,
        help="seconds a call may run when the caller sets no deadline",
    )
    engine.add_argument(
        "--channel-ttl",
        type=float,
        default=defaults.channel_ttl,
        help="seconds a channel end may stay unattached",
    )
    engine.add_argument(
        "--channel-buffer",
        type=int,
        default=defaults.channel_buffer_bytes,
        help="bytes buffered per channel before the writer is slowed down",
    )
    engine.add_argument(
        "--channel-memory",
        type=int,
        default=defaults.channel_memory_limit,
        help="bytes all channels together may buffer (plus one frame per channel)",
    )
    engine.add_argument(
        "--max-message-size",
        type=int,
        default=defaults.max_message_size,
        help="largest control message accepted, in bytes",
    )
    engine.add_argument(
        "--no-tune-allocator",
        dest="tune_allocator",
        action="store_false",
        help="keep glibc's malloc defaults (see iii_trio.tune_allocator; default: tuned)",
    )

    demo = sub.add_parser(
        "demo", parents=[common], help="embedded engine + two workers streaming a file"
    )
    demo.add_argument(
        "--size-mb", type=float, default=64.0, help="megabytes to stream (default 64)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    url_help = "engine URL (default $III_URL or ws://127.0.0.1:49134)"
    call = sub.add_parser("call", parents=[common], help="call a function and print its result")
    call.add_argument("function", help="function id, e.g. files::process")
    call.add_argument("--json", help="payload as JSON (default null)")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    call.add_argument("--void", action="store_true", help="fire and forget")
    call.add_argument("--url", help=url_help)

    for name, helptext in (
        ("functions", "list registered functions"),
        ("workers", "list connected workers"),
        ("channels", "list live channels with bytes moved"),
    ):
        listing = sub.add_parser(name, parents=[common], help=helptext)
        listing.add_argument("--url", help=url_help)
        listing.add_argument("--json", dest="json_output", action="store_true", help="print JSON")

    send = sub.add_parser(
        "send", parents=[common], help="stream a file to a function (it gets {'reader': ...})"
    )
    send.add_argument("file")
    send.add_argument("--to", required=True, metavar="FUNCTION")
    send.add_argument("--json", help="extra payload fields as a JSON object")
    send.add_argument("--quiet", action="store_true", help="no progress bar")
    send.add_argument("--url", help=url_help)

    receive = sub.add_parser(
        "receive",
        parents=[common],
        help="have a function stream a file to you (it gets {'writer': ...})",
    )
    receive.add_argument("--from", dest="source", required=True, metavar="FUNCTION")
    receive.add_argument("-o", "--output", required=True, help="file to write")
    receive.add_argument("--json", help="extra payload fields as a JSON object")
    receive.add_argument("--quiet", action="store_true", help="no progress bar")
    receive.add_argument("--url", help=url_help)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "engine": _run_engine,
    "demo": _run_demo,
    "call": _run_call,
    "functions": _run_listing,
    "workers": _run_listing,
    "channels": _run_listing,
    "send": _run_send,
    "receive": _run_receive,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or ("INFO" if args.command in ("engine", "demo") else "WARNING")
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return trio.run(_COMMANDS[args.command], args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:  # mapped to an exit code below, or re-raised
        return _report(exc, args)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _report(exc: BaseException, args: argparse.Namespace) -> int:
    leaf = _leaf(exc)
    if isinstance(leaf, InvocationError):
        print(f"error: {leaf.code}: {leaf.message}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(leaf, ConnectError):
        print(f"error: {leaf}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if isinstance(leaf, OSError):
        print(f"error: {leaf}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(leaf, IIIError | trio.BrokenResourceError):
        print(f"error: {leaf}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(leaf, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    raise exc


if __name__ == "__main__":
    sys.exit(main())
