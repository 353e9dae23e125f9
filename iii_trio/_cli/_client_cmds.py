"""The commands that talk to a running engine: call, functions/workers/channels, send, receive.

Each has a synchronous ``check_*`` that rejects bad input before anything connects (so a
usage error never depends on a running engine) and an async ``run_*``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..worker import Worker, connect_worker, receive_file, send_file
from ..worker._connect import check_engine_url
from ..worker._worker import DEFAULT_URL
from ._console import Console, Progress
from ._report import EXIT_OK, EXIT_USAGE, local_file_error, usage_error

_LISTINGS: dict[str, tuple[str, str, tuple[str, ...]]] = {
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
    "routes": (
        "engine::registered-triggers::list",
        "registered_triggers",
        ("method", "path", "function_id", "worker_name"),
    ),
    "channels": (
        "engine::channels::list",
        "channels",
        ("channel_id", "state", "bytes_in", "bytes_out", "buffered_bytes", "age_s"),
    ),
}


# --- checks, before connecting -------------------------------------------------------------


def check_client(args: argparse.Namespace) -> None:
    """Resolve the engine URL (``--url``, ``$III_URL``, the default) into ``args.url``.

    Raises:
        CliError: the URL is not a ws:// or wss:// URL (exit 2).
    """
    if args.url:
        url, source = args.url, "--url"
    elif os.environ.get("III_URL"):
        url, source = os.environ["III_URL"], "$III_URL"
    else:
        url, source = DEFAULT_URL, "the default URL"
    try:
        check_engine_url(url)
    except ValueError as exc:
        raise usage_error(f"{source}: {exc}") from None
    args.url = url


def check_send(args: argparse.Namespace) -> None:
    """As :func:`check_client`; also the file must be a readable regular file, and
    ``--json`` must leave ``reader`` to the command."""
    check_client(args)
    _check_own_field(args.json, "reader")
    _check_input(args.file)


def check_receive(args: argparse.Namespace) -> None:
    """As :func:`check_client`; also the output must be writable in an existing directory,
    and ``--json`` must leave ``writer`` to the command."""
    check_client(args)
    _check_own_field(args.json, "writer")
    _check_output(args.output)


def _check_own_field(extra: dict[str, Any], field: str) -> None:
    if field in extra:
        raise usage_error(f"--json must not set {field!r}: the command sets it to the channel")


def _check_input(path: str) -> None:
    if not path:
        raise usage_error("the file to send must be named")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise local_file_error(path, "read", exc, exit_code=EXIT_USAGE) from None
    if stat.S_ISDIR(mode):
        raise local_file_error(path, "read", "it is a directory", exit_code=EXIT_USAGE)
    if not stat.S_ISREG(mode):
        raise local_file_error(path, "read", "not a regular file", exit_code=EXIT_USAGE)
    if not os.access(path, os.R_OK):
        raise local_file_error(path, "read", "permission denied", exit_code=EXIT_USAGE)


def _check_output(path: str) -> None:
    if not path:
        raise usage_error("-o/--output must name a file")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise local_file_error(path, "write", "it is a directory", exit_code=EXIT_USAGE)
    if not os.path.isdir(directory):
        problem = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise local_file_error(
            path, "write", f"directory {directory!r} {problem}", exit_code=EXIT_USAGE
        )
    if not os.access(path if os.path.exists(path) else directory, os.W_OK):
        raise local_file_error(path, "write", "permission denied", exit_code=EXIT_USAGE)


# --- commands ------------------------------------------------------------------------------


async def _with_worker(args: argparse.Namespace, body: Callable[[Worker], Awaitable[int]]) -> int:
    async with connect_worker(
        args.url, name=f"iii-trio-cli:{os.getpid()}", token=args.token, reconnect=False
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


def _progress(args: argparse.Namespace, console: Console, label: str) -> Progress:
    enabled = console.is_terminal if args.progress is None else bool(args.progress)
    return Progress(console, label, enabled=enabled)


async def run_call(args: argparse.Namespace, console: Console) -> int:
    async def body(worker: Worker) -> int:
        if not args.void:
            _print_json(await worker.trigger(args.function, args.json, timeout=args.timeout))
            return EXIT_OK
        await worker.trigger(args.function, args.json, timeout=args.timeout, action="void")
        # One round trip on the same ordered connection: the engine has taken the call.
        await worker.sync(timeout=args.timeout)
        console.line(f"accepted: void call to {args.function} (no result is awaited)")
        return EXIT_OK

    return await _with_worker(args, body)


async def run_listing(args: argparse.Namespace, console: Console) -> int:
    function, key, columns = _LISTINGS[args.command]

    async def body(worker: Worker) -> int:
        payload = {"trigger_type": "http"} if args.command == "routes" else {}
        answer = await worker.trigger(function, payload)
        rows = list(answer[key])
        while "next" in answer:  # a listing longer than one answer (max_list_answer)
            answer = await worker.trigger(function, {**payload, "after": answer["next"]})
            rows += answer[key]
        if args.command == "routes":
            rows = [_route_row(row) for row in rows]
        if args.json_output:
            _print_json(rows)
        else:
            _table(rows, columns)
        return EXIT_OK

    return await _with_worker(args, body)


def _route_row(binding: dict[str, Any]) -> dict[str, Any]:
    """A binding of the ``http`` trigger type as a route: method and path first."""
    config = binding.get("config")
    config = config if isinstance(config, dict) else {}
    method = config.get("http_method", "GET")
    path = str(config.get("api_path", "")).lstrip("/")
    return {
        "method": method.upper() if isinstance(method, str) else method,
        "path": f"/{path}",
        **binding,
    }


async def run_send(args: argparse.Namespace, console: Console) -> int:
    name = os.path.basename(args.file)

    async def body(worker: Worker) -> int:
        progress = _progress(args, console, f"sending {name}")
        # File-derived fields only fill what the user did not give.
        payload = {"name": name, **args.json}
        async with worker.stream_to(args.to, payload, timeout=args.timeout) as call:
            try:
                await send_file(args.file, call.writer, progress=progress, close=False)
            except OSError as exc:
                raise local_file_error(args.file, "read", exc) from exc
        progress.finish()
        _print_json(call.result)
        return EXIT_OK

    return await _with_worker(args, body)


async def run_receive(args: argparse.Namespace, console: Console) -> int:
    async def body(worker: Worker) -> int:
        progress = _progress(args, console, f"receiving {os.path.basename(args.output)}")
        async with worker.stream_from(args.source, args.json, timeout=args.timeout) as call:
            try:
                size = await receive_file(call.reader, args.output, progress=progress)
            except OSError as exc:
                raise local_file_error(args.output, "write", exc) from exc
        progress.finish()
        console.line(f"wrote {size} bytes to {args.output}")
        if call.result is not None:
            _print_json(call.result)
        return EXIT_OK

    return await _with_worker(args, body)
