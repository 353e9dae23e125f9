"""The engine: listeners, routing of upgrade requests, and the tables every connection shares."""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio

from .. import _errors as codes
from .._ws import Accept, ConnectionClosed, HandshakeRequest, Reject, WebSocket, serve_websockets
from ..protocol import ErrorBody, InvocationResult, Message
from ._broker import CHANNEL_PATH, ChannelBroker
from ._config import EngineConfig
from ._connection import WorkerConnection
from ._invocations import Invocation, InvocationTable
from ._registry import DEFAULT_NAMESPACE, FunctionRegistry

logger = logging.getLogger("iii_trio.engine")


@attrs.frozen(kw_only=True)
class EngineStatistics:
    workers: int
    functions: int
    invocations: int
    channels: int
    channels_finished: int


@final
class Engine:
    """An iii engine. Start it with :func:`open_engine` or :func:`serve_engine`.

    Attributes:
        config: the settings it runs with.
        url: ``ws://host:port`` once it listens (the port is real even if 0 was asked).
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config if config is not None else EngineConfig()
        self.registry = FunctionRegistry(on_change=self._on_function_registered)
        self.invocations = InvocationTable()
        self.broker = ChannelBroker(self.config, on_change=self.notify)
        self.workers: dict[str, WorkerConnection] = {}
        self._nursery: trio.Nursery | None = None
        self._function_waiters: dict[tuple[str, str], trio.Event] = {}
        self._reaper_wakeup = trio.Event()
        self._reaper_until = math.inf
        self.url = ""
        self.port = 0
        self._change: trio.Event | None = None

    # --- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled. ``task_status.started(self)`` once listening.

        Raises:
            OSError: the address could not be bound.
        """
        config = self.config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        try:
            sockname = listeners[0].socket.getsockname()
            self.port = sockname[1]
            host = config.host if ":" not in config.host else f"[{config.host}]"
            self.url = f"ws://{host}:{self.port}"
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reap_deadlines)
                nursery.start_soon(self.broker.run)
                nursery.start_soon(
                    partial_serve(self._route, listeners, nursery, config.handshake_timeout)
                )
                logger.info("engine listening on %s", self.url)
                task_status.started(self)
        finally:
            self._nursery = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the engine's nursery."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # --- routing of upgrade requests ---------------------------------------------------------

    def _authorized(self, request: HandshakeRequest) -> bool:
        token = self.config.token
        if token is None:
            return True
        supplied = request.query.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            supplied = auth[7:].strip()
        return hmac.compare_digest(supplied.encode(), token.encode())

    def _route(self, request: HandshakeRequest, peer: str) -> Accept | Reject:
        if not self._authorized(request):
            logger.warning("refused %s from %s: missing or wrong token", request.path, peer)
            return Reject(
                401,
                "this engine needs 'Authorization: Bearer <token>'\n",
                [("WWW-Authenticate", "Bearer")],
            )
        path = request.path
        if path == "/":
            connection = WorkerConnection(self, peer)
            return Accept(connection.run, max_message_size=self.config.max_message_size)
        if path.startswith(CHANNEL_PATH):
            return self.broker.route(request, peer)
        if path == "/otel":
            return Accept(_drain_telemetry, max_message_size=self.config.max_message_size)
        return Reject(404, f"no endpoint at {path}; workers connect to /\n")

    # --- invocation deadlines ----------------------------------------------------------------

    def deadline_added(self, deadline: float) -> None:
        if deadline < self._reaper_until:
            self._reaper_wakeup.set()

    async def _reap_deadlines(self) -> None:
        while True:
            deadline = self.invocations.next_deadline()
            self._reaper_until = math.inf if deadline is None else deadline
            self._reaper_wakeup = trio.Event()
            with trio.move_on_at(self._reaper_until):
                await self._reaper_wakeup.wait()
            expired = self.invocations.pop_expired(trio.current_time())
            if expired:
                self.notify()
            for inv in expired:
                seconds = round(inv.deadline - inv.started, 3)
                self._tell_caller(
                    inv,
                    codes.INVOCATION_TIMEOUT,
                    f"function '{inv.function_id}' did not answer within {seconds}s",
                )

    def _tell_caller(self, inv: Invocation, code: str, message: str) -> None:
        if inv.caller_id is None:
            return
        caller = self.workers.get(inv.caller)
        if caller is not None:
            caller.post(
                InvocationResult(
                    invocation_id=inv.caller_id,
                    function_id=inv.function_id,
                    error=ErrorBody(code=code, message=message),
                )
            )

    # --- worker lifecycle --------------------------------------------------------------------

    def forget_worker(self, conn: WorkerConnection) -> None:
        """A connection ended: drop its functions; fail the calls it was running."""
        if self.workers.get(conn.worker_id) is conn:
            del self.workers[conn.worker_id]
        self.notify()
        for entry in self.registry.remove_worker(conn.worker_id):
            logger.info("function %s gone with worker %s", entry.function_id, conn.worker_id)
        for inv in self.invocations.remove_worker(conn.worker_id):
            if inv.executor == conn.worker_id and inv.caller != conn.worker_id:
                self._tell_caller(
                    inv,
                    codes.INVOCATION_STOPPED,
                    f"worker serving '{inv.function_id}' disconnected",
                )

    def log_conflict(self, conn: WorkerConnection, function_id: str) -> None:
        logger.warning(
            "worker %s lost %s when it moved to namespace %s: already registered there",
            conn.worker_id,
            function_id,
            conn.namespace,
        )

    async def on_peripheral(self, conn: WorkerConnection, msg: Message) -> None:
        """Trigger types, bindings and services: accepted and ignored for now."""
        logger.debug("ignored %s from worker %s", type(msg).__name__, conn.worker_id)

    # --- waiting and introspection -----------------------------------------------------------

    def _on_function_registered(self, key: tuple[str, str]) -> None:
        event = self._function_waiters.pop(key, None)
        if event is not None:
            event.set()
        self.notify()

    def notify(self) -> None:
        """Wake :meth:`wait_until` callers (the engine's state changed)."""
        if self._change is not None:
            self._change.set()
            self._change = None

    async def wait_until(self, predicate: Callable[[Engine], bool]) -> None:
        """Wait until ``predicate(engine)`` is true; it is re-checked whenever workers,
        functions, invocations or channels change. For tests and tools; no polling."""
        while not predicate(self):
            if self._change is None:
                self._change = trio.Event()
            await self._change.wait()
        await trio.lowlevel.checkpoint()

    async def wait_function(self, function_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Wait until some worker has registered ``function_id`` (returns at once if one has)."""
        key = (namespace, function_id)
        while self.registry.lookup(namespace, function_id) is None:
            event = self._function_waiters.setdefault(key, trio.Event())
            await event.wait()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            workers=len(self.workers),
            functions=len(self.registry),
            invocations=len(self.invocations),
            channels=len(self.broker.channels),
            channels_finished=self.broker.finished,
        )


def partial_serve(
    router: Callable[[HandshakeRequest, str], Accept | Reject],
    listeners: list[trio.SocketListener],
    nursery: trio.Nursery,
    handshake_timeout: float,
) -> Callable[[], Awaitable[None]]:
    async def serve() -> None:
        await serve_websockets(
            router, listeners, handler_nursery=nursery, handshake_timeout=handshake_timeout
        )

    return serve


async def _drain_telemetry(ws: WebSocket) -> None:
    """``/otel``: iii SDKs stream telemetry here; we accept it and drop it."""
    try:
        while True:
            await ws.receive()
    except ConnectionClosed:
        return


@asynccontextmanager
async def open_engine(config: EngineConfig | None = None, **settings: Any) -> AsyncIterator[Engine]:
    """Run an engine in the background for the duration of the block.

    ``settings`` are :class:`EngineConfig` fields (``port=0`` for a free port is the usual
    choice in tests). On exit the engine stops and every connection is closed.

    Raises:
        OSError: the address could not be bound.
    """
    if config is None:
        config = EngineConfig(**settings)
    elif settings:
        config = attrs.evolve(config, **settings)
    async with trio.open_nursery() as nursery:
        engine: Engine = await nursery.start(Engine(config).run)
        try:
            yield engine
        finally:
            nursery.cancel_scope.cancel()


async def serve_engine(
    config: EngineConfig | None = None,
    *,
    task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED,
    **settings: Any,
) -> None:
    """Run an engine until cancelled (``await nursery.start(serve_engine, ...)`` gives it)."""
    if config is None:
        config = EngineConfig(**settings)
    elif settings:
        config = attrs.evolve(config, **settings)
    await Engine(config).run(task_status=task_status)
