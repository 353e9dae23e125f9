"""The commands that run an engine: ``engine`` (until Ctrl-C / SIGTERM) and ``demo``."""

from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .._allocator import tune_allocator
from .._version import __version__
from ..engine import Engine, EngineConfig, open_engine
from ..worker import connect_worker
from ._console import Console, Progress
from ._report import EXIT_ERROR, EXIT_OK, CliError, usage_error

logger = logging.getLogger("iii_trio.cli")


def check_engine(args: argparse.Namespace) -> None:
    """Build the engine's config into ``args.config``.

    Raises:
        CliError: a setting is out of range (exit 2).
    """
    try:
        limits = {
            field.name: getattr(args, field.name)
            for field in attrs.fields(EngineConfig)
            if field.name not in ("host", "port", "token")
        }
        args.config = EngineConfig(
            host=args.host,
            port=args.port,
            token=args.token or os.environ.get("III_TOKEN") or None,
            **limits,
        )
    except ValueError as exc:
        raise usage_error(str(exc)) from None


async def run_engine(args: argparse.Namespace, console: Console) -> int:
    config: EngineConfig = args.config
    if args.tune_allocator and tune_allocator():
        logger.info("allocator: freed memory kept up to 64 MiB (see iii_trio.tune_allocator)")
    _raise_descriptor_limit(config.max_connections + _SPARE_DESCRIPTORS)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with _listening(config) as engine:
            print(_banner(engine, config), flush=True)
            async for signum in signals:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                break
            await engine.shutdown()
    print("engine stopped", flush=True)
    return EXIT_OK


#: Descriptors the engine needs besides its connections (listeners, logs, files, ...).
_SPARE_DESCRIPTORS = 256


def _raise_descriptor_limit(wanted: int) -> None:
    """Raise the soft limit on open files towards ``wanted`` (as far as the hard limit
    allows), so ``max_connections`` is not cut short by a default of 1024."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
            return
        logger.info("open-file limit raised from %d to %d (max_connections)", soft, target)


def _banner(engine: Engine, config: EngineConfig) -> str:
    return (
        f"iii_trio {__version__} engine listening on {engine.url}\n"
        f"  token: {'required' if config.token else 'off'}"
        f"   max message: {config.max_message_size // (1024 * 1024)} MiB"
        f"   channel buffer: {config.channel_buffer_bytes // 1024} KiB"
        f" (all channels: {config.channel_memory_limit // (1024 * 1024)} MiB)"
        f"   channel TTL: {config.channel_ttl:g}s"
        f"   invocation timeout: {config.invocation_timeout:g}s\n"
        + (f"  HTTP triggers on {engine.http_url}\n" if engine.http_url else "")
        + "  Ctrl-C or SIGTERM stops it."
    )


@asynccontextmanager
async def _listening(config: EngineConfig) -> AsyncIterator[Engine]:
    """``open_engine``, with a failure to listen reported as a local error (exit 1)."""
    started = False
    try:
        async with open_engine(config) as engine:
            started = True
            yield engine
    except (OSError, BaseExceptionGroup) as exc:
        failure = _single(exc)
        if started or not isinstance(failure, OSError):
            raise
        raise _cannot_listen(config, failure) from exc


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _cannot_listen(config: EngineConfig, exc: OSError) -> CliError:
    host = f"[{config.host}]" if ":" in config.host else config.host
    where = f"{host}:{config.port}"
    if exc.errno == errno.EADDRINUSE:
        reason = "the address is already in use (by another engine?); choose another --port"
    elif exc.errno:
        reason = os.strerror(exc.errno).lower()
    else:
        reason = str(exc)
    return CliError(f"the engine cannot listen on {where}: {reason}", exit_code=EXIT_ERROR)


# --- demo ----------------------------------------------------------------------------------


async def run_demo(args: argparse.Namespace, console: Console) -> int:
    """An embedded engine and two workers: one streams generated bytes through a channel,
    the other checksums them; the two sha256 digests must agree."""
    size = int(args.size_mb * 1024 * 1024)
    enabled = console.is_terminal if args.progress is None else bool(args.progress)
    async with open_engine(port=0) as engine:
        print(f"embedded engine on {engine.url}")
        async with (
            connect_worker(engine.url, name="demo-store") as store,
            connect_worker(engine.url, name="demo-client") as client,
        ):
            store.register_function("demo::checksum", _checksum)
            await engine.wait_function("demo::checksum")
            progress = Progress(console, "sending", enabled=enabled)
            started = time.monotonic()
            result: dict[str, Any] = {}
            sent = hashlib.sha256()
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
    if result["sha256"] != sent.hexdigest():
        raise CliError("the checksums differ", exit_code=EXIT_ERROR)
    return EXIT_OK


async def _checksum(payload: dict[str, Any]) -> dict[str, Any]:
    reader = payload["reader"]
    digest = hashlib.sha256()
    received = 0
    notes: list[str] = []
    reader.on_message(notes.append)
    async for chunk in reader:
        digest.update(chunk)
        received += len(chunk)
    return {"size": received, "sha256": digest.hexdigest(), "notes": notes}
