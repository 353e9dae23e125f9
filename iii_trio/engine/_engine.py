"""The engine: listeners, routing of upgrade requests, and the tables every connection shares."""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, final

import attrs
import trio
import trio.testing

from .. import _codes as codes
from .._ws import (
    Accept,
    ConnectionClosed,
    HandshakeRequest,
    MessageSocket,
    Reject,
    handle_connection,
    open_memory_websocket,
    serve_websockets,
)
from ..protocol import ErrorBody, InvocationResult, Message
from ._broker import CHANNEL_PATH, ChannelBroker
from ._config import EngineConfig
from ._connection import WorkerConnection
from ._invocations import Invocation, InvocationTable
from ._registry import DEFAULT_NAMESPACE, FunctionRegistry
from ._triggers import TriggerRouter

logger = logging.getLogger("iii_trio.engine")

#: Seconds a stopping engine gives its connections to deliver what is queued and close.
_GOODBYE_TIMEOUT: Final = 2.0


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """A snapshot of what an engine holds (:meth:`Engine.statistics`)."""

    workers: int
    functions: int
    invocations: int
    channels: int
    channels_finished: int
    #: Bytes of channel data the engine holds now, and the most it held at once.
    channel_buffered_bytes: int = 0
    channel_buffered_peak: int = 0


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
        #: Trigger types and bindings (``triggers.table`` is the bookkeeping).
        self.triggers = TriggerRouter(self)
        self._nursery: trio.Nursery | None = None
        self._function_waiters: dict[tuple[str, str], trio.Event] = {}
        self._reaper_wakeup = trio.Event()
        self._reaper_until = math.inf
        self.url = ""
        self.port = 0
        #: True once :meth:`shutdown` started: new calls and channels are refused.
        self.shutting_down = False
        self._accept_scope = trio.CancelScope()
        self._stop_scope: trio.CancelScope | None = None
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
                self._stop_scope = nursery.cancel_scope
                nursery.start_soon(self._reap_deadlines)
                nursery.start_soon(self.broker.run)
                nursery.start_soon(self._accept, listeners, nursery)
                logger.info("engine listening on %s", self.url)
                task_status.started(self)
        finally:
            self._nursery = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _accept(self, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
        with self._accept_scope:
            await serve_websockets(
                self._route,
                listeners,
                handler_nursery=nursery,
                handshake_timeout=self.config.handshake_timeout,
            )

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop gracefully: refuse new connections, calls and channels; wait up to
        ``timeout`` seconds (default ``config.shutdown_timeout``) for invocations in flight
        to finish; then close every connection with 1001 ("going away") and stop.

        Calls still unanswered at the deadline fail with ``invocation_stopped``; channels
        still streaming end with close code 1001 on both sides.
        """
        if self._nursery is None:
            await trio.lowlevel.checkpoint()
            return
        self.shutting_down = True
        self.notify()
        self._accept_scope.cancel()
        logger.info("engine shutting down: %d invocations in flight", len(self.invocations))
        with trio.move_on_after(self.config.shutdown_timeout if timeout is None else timeout):
            await self.wait_until(lambda e: len(e.invocations) == 0)
        for inv in self.invocations.all():
            self._tell_caller(inv, codes.INVOCATION_STOPPED, "the engine is shutting down")
        # Each connection delivers what is queued for it (these answers included), then
        # closes with 1001; channel sockets get 1001 when the rest is cancelled.
        for conn in list(self.workers.values()):
            conn.stop()
        with trio.move_on_after(_GOODBYE_TIMEOUT):
            await self.wait_until(lambda e: not e.workers)
        assert self._stop_scope is not None
        self._stop_scope.cancel()

    async def connect_in_memory(self, *, lockstep: bool = False) -> trio.abc.Stream:
        """A client byte stream to this engine that never touches a socket: the full WebSocket
        framing runs over memory (``dialer=engine.connect_in_memory`` for
        :func:`connect_worker`). For speed, use :attr:`local_dialer` instead.

        ``lockstep=True`` gives a transport with no buffering at all, where every write
        waits for the engine to read it (see ``trio.testing.lockstep_stream_pair``).

        Raises:
            RuntimeError: the engine is not running.
        """
        if self._nursery is None:
            raise RuntimeError("the engine is not running")
        make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = make()
        self._nursery.start_soon(
            partial(
                handle_connection,
                server,
                self._route,
                handshake_timeout=self.config.handshake_timeout,
            )
        )
        await trio.lowlevel.checkpoint()
        return client

    @property
    def local_dialer(self) -> LocalDialer:
        """The fastest way to connect a worker in the same process:
        ``connect_worker(engine.url, dialer=engine.local_dialer)``. The worker's connection
        and its channel sockets become in-process message sockets: messages, and channel
        data, are passed to the engine as objects, with no framing and no copies, and the
        engine routes, authorizes, buffers and accounts for them exactly as for sockets."""
        return LocalDialer(self)

    async def _open_local_websocket(
        self, resource: str, headers: Sequence[tuple[str, str]], max_message_size: int
    ) -> MessageSocket:
        if self._nursery is None or self._accept_scope.cancel_called:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError("the engine is not running or is shutting down")
        return await open_memory_websocket(
            self._route,
            resource,
            headers,
            max_message_size=max_message_size,
            handler_nursery=self._nursery,
        )

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
        """A connection ended: drop its functions and trigger bindings (telling providers);
        park the bindings it provided; fail the calls it was running."""
        if self.workers.get(conn.worker_id) is conn:
            del self.workers[conn.worker_id]
        self.notify()
        for entry in self.registry.remove_worker(conn.worker_id):
            logger.info("function %s gone with worker %s", entry.function_id, conn.worker_id)
        self.triggers.forget_worker(conn.worker_id)
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
        """Trigger types and bindings go to :attr:`triggers`; services are accepted and
        ignored."""
        if await self.triggers.handle(conn, msg):
            return
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
            channel_buffered_bytes=self.broker.budget.used,
            channel_buffered_peak=self.broker.budget.peak,
        )


async def _drain_telemetry(ws: MessageSocket) -> None:
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


@final
@attrs.frozen
class LocalDialer:
    """Connects workers to an engine in the same process (:attr:`Engine.local_dialer`).

    As a plain dialer (``await dialer()``) it gives an in-memory byte stream, like
    :meth:`Engine.connect_in_memory`; :func:`connect_worker` instead asks it for whole
    message sockets (:meth:`open_websocket`), so nothing is framed or copied.
    """

    engine: Engine

    async def __call__(self) -> trio.abc.Stream:
        """Raises: RuntimeError: the engine is not running."""
        return await self.engine.connect_in_memory()

    async def open_websocket(
        self, resource: str, headers: Sequence[tuple[str, str]], *, max_message_size: int
    ) -> MessageSocket:
        """Upgrade a request for ``resource`` (path and query) to an in-process socket.

        Raises:
            HandshakeError: the engine refused (401, 404, 409, ... as over a socket).
            ConnectionRefusedError: the engine is not running, or shutting down.
        """
        return await self.engine._open_local_websocket(resource, headers, max_message_size)
