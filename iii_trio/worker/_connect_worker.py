"""``connect_worker``: a :class:`Worker` connected for the duration of a block."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from .._unwrap import open_nursery
from .._ws import Dialer
from .._ws._client import CONNECT_TIMEOUT
from ._worker import DEFAULT_URL, INVOCATION_TIMEOUT, Worker


@asynccontextmanager
async def connect_worker(
    url: str | None = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    reconnect: bool = True,
    invocation_timeout: float = INVOCATION_TIMEOUT,
    dialer: Dialer | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> AsyncIterator[Worker]:
    """Connect a worker to an engine for the duration of the block.

    Args:
        url: the engine; default ``$III_URL``, else ``ws://127.0.0.1:49134``.
        name: the worker's name (default ``hostname:pid``).
        namespace: where its functions live (default: iii's ``default``).
        token: sent as ``Authorization: Bearer``; default ``$III_TOKEN``.
        headers: extra HTTP headers for every socket the worker opens.
        reconnect: re-establish a lost connection (with backoff) instead of ending.
        invocation_timeout: seconds :meth:`Worker.trigger` waits by default.
        dialer: replaces TCP for every socket the worker opens (``engine.local_dialer`` for
            an engine in the same process).
        connect_timeout: seconds each WebSocket opening handshake may take (the worker's own
            and every channel socket's); raise it for engines under heavy load.

    On exit the connection closes and every channel the worker owns is closed. An exception
    raised in the block leaves it as itself (never wrapped in an ``ExceptionGroup``), and so
    does the one failure of the worker's own tasks.

    Raises:
        ConnectError: the first connection failed, as one of its subclasses:
            :class:`~iii_trio.EngineUnreachable` (nothing answered, or no upgrade within
            ``connect_timeout``), :class:`~iii_trio.Unauthorized` (HTTP 401: token missing or
            rejected), :class:`~iii_trio.HandshakeRefused` (another HTTP answer, e.g. 404).
        ValueError: ``url`` is not a ws:// or wss:// URL.
    """
    resolved = url or os.environ.get("III_URL") or DEFAULT_URL
    worker = Worker(
        resolved,
        name=name,
        namespace=namespace,
        token=token if token is not None else os.environ.get("III_TOKEN"),
        headers=headers,
        reconnect=reconnect,
        invocation_timeout=invocation_timeout,
        dialer=dialer,
        connect_timeout=connect_timeout,
    )
    async with open_nursery() as nursery:
        await nursery.start(worker.run)
        try:
            yield worker
        finally:
            worker._closing = True
            nursery.cancel_scope.cancel()
