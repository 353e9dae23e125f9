"""The engine: listeners, routing of upgrade requests, and the glue between the connections
(which move bytes) and the router (which decides).

Every message a connection decodes goes to :meth:`Router.receive`; what the router says to send
is delivered at once, without waiting, by :meth:`Engine._deliver` into each target
connection's :class:`~iii_trio._ws.Outbox`, with the policy docs/security.md states:

* an invocation the executor's outbox will not take (over ``outbox_limit``) fails at once with
  ``worker_overloaded``;
* anything else a connection must get (answers to its calls, trigger deliveries) that its
  outbox will not take (over ``outbox_hard_limit`` or ``outbox_max_messages``) drops that
  connection as a slow consumer;
* a worker that does not answer a keepalive ping within ``ping_timeout`` is dropped.

So a peer that stops reading costs at most its own bounded outbox, and never holds up anyone
else's task.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final, final

import attrs
import trio
import trio.testing

from .._errors import LocalProtocolError, RemoteProtocolError
from .._log_budget import WarningBudget
from .._ws import (
    Accept,
    ConnectionClosed,
    HandshakeRequest,
    MessageSocket,
    Outbox,
    Reject,
    WebSocket,
    handle_connection,
    open_memory_websocket,
    serve_websockets,
)
from ..protocol import (
    JSON,
    ForwardInvoke,
    ForwardResult,
    InvokeFunction,
    Message,
    RelayedInvoke,
    RelayedResult,
    encode,
)
from ._broker import CHANNEL_PATH, ChannelBroker
from ._config import EngineConfig
from ._connection import WorkerConnection, keepalive
from ._http_invoker import HTTP_FUNCTIONS_WORKER, HttpInvoker
from ._http_server import HttpGateway, serve_http
from ._http_service import HTTP_WORKER, HttpTriggers
from ._registry import DEFAULT_NAMESPACE
from ._router import Drop, Outgoing, Router
from ._statistics import EngineStatistics

logger = logging.getLogger("iii_trio.engine")

#: Seconds a stopping engine gives its connections to deliver what is queued and close.
_GOODBYE_TIMEOUT: Final = 2.0


@final
class Engine:
    """An iii engine. Start it with :func:`open_engine` or :func:`serve_engine`.

    Attributes:
        config: the settings it runs with.
        url: ``ws://host:port`` once it listens (the port is real even if 0 was asked).
        port: the TCP port it listens on.
        http_url: ``http://host:port`` of its HTTP server (``http`` triggers) once it
            listens; ``""`` when ``config.http_port`` is ``None``.
        http_port: the TCP port of its HTTP server (0 when there is none).
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config if config is not None else EngineConfig()
        self._broker = ChannelBroker(self.config, on_change=self._notify)
        self._router = Router(
            self.config,
            channels=self._broker,
            clock=trio.current_time,
            on_change=self._notify,
            on_deadline=self._deadline_added,
        )
        self._connections: dict[str, WorkerConnection] = {}
        self._nursery: trio.Nursery | None = None
        self._reaper_wakeup = trio.Event()
        self._reaper_until = math.inf
        self.url = ""
        self.port = 0
        self._accept_scope = trio.CancelScope()
        self._stop_scope: trio.CancelScope | None = None
        self._change: trio.Event | None = None
        self._calls_refused = 0
        #: Upgraded sockets of every kind being served, and upgrades refused at the limit.
        self._sockets = 0
        self._connections_refused = 0
        #: Log lines rationed per engine: anyone can make token refusals, and thousands
        #: of workers can be dropped at once (one keepalive round).
        self._token_refusals = WarningBudget(logger)
        self._drop_warnings = WarningBudget(logger)
        self._upgrade_refusals = WarningBudget(logger)
        self._slow_consumers = 0
        self._unresponsive = 0
        self._outbox_peak = 0
        self.http_url = ""
        self.http_port = 0
        #: The engine's own services that talk to the router as workers do, by worker id:
        #: what the router sends them is handed to these callbacks (see _deliver).
        self._internal: dict[str, Callable[[Message], None]] = {}
        self._http: HttpGateway | None = None
        self._invoker: HttpInvoker | None = None
        self._http_accept_scope = trio.CancelScope()
        self._start_http_services()

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` started: new calls and channels are refused."""
        return self._router.shutting_down

    # --- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled. ``task_status.started(self)`` once listening.

        Raises:
            OSError: the address could not be bound.
        """
        config = self.config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        http_listeners: list[trio.SocketListener] = []
        try:
            if self._http is not None and config.http_port is not None:
                http_listeners = await trio.open_tcp_listeners(
                    config.http_port, host=config.http_host
                )
                self.http_port = http_listeners[0].socket.getsockname()[1]
                host = config.http_host if ":" not in config.http_host else f"[{config.http_host}]"
                self.http_url = f"http://{host}:{self.http_port}"
            sockname = listeners[0].socket.getsockname()
            self.port = sockname[1]
            host = config.host if ":" not in config.host else f"[{config.host}]"
            self.url = f"ws://{host}:{self.port}"
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._stop_scope = nursery.cancel_scope
                nursery.start_soon(self._reap_deadlines)
                nursery.start_soon(self._broker.run)
                nursery.start_soon(self._accept, listeners, nursery)
                if self._invoker is not None:
                    nursery.start_soon(self._invoker.run)
                if self._http is not None:
                    nursery.start_soon(self._accept_http, self._http, http_listeners, nursery)
                    logger.info("HTTP triggers served on %s", self.http_url)
                logger.info("engine listening on %s", self.url)
                task_status.started(self)
        finally:
            self._nursery = None
            for listener in [*listeners, *http_listeners]:
                await trio.aclose_forcefully(listener)

    async def _accept(self, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
        with self._accept_scope:
            await serve_websockets(
                self._route,
                listeners,
                handler_nursery=nursery,
                handshake_timeout=self.config.handshake_timeout,
            )

    async def _accept_http(
        self, gateway: HttpGateway, listeners: list[trio.SocketListener], nursery: trio.Nursery
    ) -> None:
        with self._http_accept_scope:
            await serve_http(gateway, listeners, handler_nursery=nursery)

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
        router = self._router
        router.start_shutdown()
        self._accept_scope.cancel()
        self._http_accept_scope.cancel()
        logger.info("engine shutting down: %d invocations in flight", len(router.invocations))
        with trio.move_on_after(self.config.shutdown_timeout if timeout is None else timeout):
            await self.wait_until(lambda e: len(e._router.invocations) == 0)
        self._deliver(router.stop_invocations("the engine is shutting down"))
        # Each connection delivers what is queued for it (these answers included), then
        # closes with 1001; channel sockets get 1001 when the rest is cancelled.
        for conn in list(self._connections.values()):
            conn.stop()
        with trio.move_on_after(_GOODBYE_TIMEOUT):
            await self.wait_until(lambda e: not e._connections)
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
            self._token_refusals.warning(
                "refused %s from %s: missing or wrong token", request.path, peer
            )
            return Reject(
                401,
                "this engine needs 'Authorization: Bearer <token>'\n",
                [("WWW-Authenticate", "Bearer")],
            )
        if self._sockets >= self.config.max_connections:
            self._connections_refused += 1
            self._upgrade_refusals.warning(
                "refusing upgrades: %d connections open (max_connections); %d refused so far",
                self._sockets,
                self._connections_refused,
            )
            return Reject(
                503,
                f"the engine serves {self._sockets} connections, its limit; try again later\n",
                [("Retry-After", "1")],
            )
        decision = self._decide(request, peer)
        if isinstance(decision, Reject):
            return decision
        # Accepted: the handler always runs once (see Accept), so the count comes back down.
        self._sockets += 1
        return attrs.evolve(decision, handler=partial(self._counted, decision.handler))

    async def _counted(
        self, handler: Callable[[MessageSocket], Awaitable[None]], ws: MessageSocket
    ) -> None:
        try:
            await handler(ws)
        finally:
            self._sockets -= 1
            self._notify()

    def _decide(self, request: HandshakeRequest, peer: str) -> Accept | Reject:
        path = request.path
        if path == "/":
            return Accept(
                partial(self._serve_worker, peer),
                max_message_size=self.config.max_message_size,
                max_message_frames=self.config.max_message_frames,
            )
        if path.startswith(CHANNEL_PATH):
            return self._broker.route(request, peer)
        if path == "/otel":
            return Accept(
                partial(_drain_telemetry, self.config),
                max_message_size=self.config.max_message_size,
                max_message_frames=self.config.max_message_frames,
            )
        return Reject(404, f"no endpoint at {path}; workers connect to /\n")

    # --- worker connections ----------------------------------------------------------------

    async def _serve_worker(self, peer: str, ws: MessageSocket) -> None:
        config = self.config
        record, welcome = self._router.connect(peer)
        worker_id = record.worker_id
        outbox = Outbox(
            ws,
            limit=config.outbox_limit,
            hard_limit=config.outbox_hard_limit,
            max_messages=config.outbox_max_messages,
        )
        conn = WorkerConnection(
            worker_id,
            ws,
            outbox,
            on_message=self._on_message,
            on_bad_message=self._on_bad_message,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            drop_warnings=self._drop_warnings,
        )
        self._connections[worker_id] = conn
        logger.info("worker %s connected from %s", worker_id, peer)
        self._deliver(welcome)
        reason = "closed"
        try:
            reason = await conn.run()
        finally:
            self._outbox_peak = max(self._outbox_peak, outbox.statistics().peak_bytes)
            if conn.unresponsive:
                self._unresponsive += 1
            # In one step: nothing is routed to the connection once the router forgot it.
            del self._connections[worker_id]
            self._deliver(self._router.disconnect(worker_id))
            logger.info("worker %s (%s) disconnected: %s", worker_id, record.name, reason)

    def _on_message(
        self, worker_id: str, msg: Message | RelayedInvoke | RelayedResult, burst: bool
    ) -> int:
        return self._deliver(self._router.receive(worker_id, msg), burst)

    def _on_bad_message(self, worker_id: str, raw: str | bytes, exc: RemoteProtocolError) -> None:
        self._deliver(self._router.bad_message(worker_id, raw, exc))

    def _deliver(self, out: list[Outgoing], burst: bool = False) -> int:
        """Hand each message to its connection's outbox, never waiting (see the module
        docstring for what a full outbox means). Returns the characters encoded."""
        connections = self._connections
        encoded = 0
        for target, item in out:
            conn = connections.get(target)
            if conn is None:
                internal = self._internal.get(target)
                if internal is not None and not isinstance(item, Drop):
                    # One of the engine's own services (the HTTP server): the router gives
                    # them typed messages, never the relay's forward forms.
                    assert not isinstance(item, ForwardInvoke | ForwardResult), item
                    internal(item)
                continue  # it left: the router has answered for it
            if isinstance(item, Drop):
                conn.drop(item.reason)
                continue
            try:
                text = encode(item)
            except LocalProtocolError:
                logger.exception("could not encode a %s for %s", type(item).__name__, target)
                continue
            encoded += len(text)
            if type(item) is ForwardInvoke or (
                isinstance(item, InvokeFunction) and item.invocation_id is not None
            ):
                if not conn.outbox.offer(text, burst=burst):
                    self._calls_refused += 1
                    self._deliver(self._router.refused(target, item))
            elif not conn.outbox.post(text, burst=burst):
                stats = conn.outbox.statistics()
                if conn.drop(
                    f"slow consumer: {stats.queued_bytes} bytes in {stats.queued_messages} "
                    "messages queued for it (outbox_hard_limit "
                    f"{self.config.outbox_hard_limit}, outbox_max_messages "
                    f"{self.config.outbox_max_messages})"
                ):
                    self._slow_consumers += 1
        return encoded

    # --- the engine's own services ------------------------------------------------------------

    def _start_http_services(self) -> None:
        """The HTTP server's ``http`` trigger type and the caller of HTTP-invoked functions,
        as internal workers of the router (when the config asks for them)."""
        config = self.config
        broker = self._broker
        if config.http_port is not None:
            triggers = HttpTriggers(partial(self._submit_internal, HTTP_WORKER))
            self._add_internal(HTTP_WORKER, "iii-http", triggers.deliver)

            def writer_attached(channel_id: str) -> bool:
                channel = broker.channels.get(channel_id)
                return channel is not None and channel.attached("write")

            self._http = HttpGateway(
                config=config,
                triggers=triggers,
                create_channel=partial(broker.create, HTTP_WORKER, None),
                release_channel=broker.release,
                writer_attached=writer_attached,
                open_end=self._open_channel_end,
                requests=trio.Semaphore(config.http_max_requests),
            )
            triggers.start()
        if config.http_functions:
            functions = self._router.functions

            def invocation_of(namespace: str, function_id: str) -> JSON:
                entry = functions.lookup(namespace, function_id)
                return None if entry is None else entry.invocation

            invoker = HttpInvoker(
                config, partial(self._submit_internal, HTTP_FUNCTIONS_WORKER), invocation_of
            )
            self._add_internal(HTTP_FUNCTIONS_WORKER, "iii-http-functions", invoker.deliver)
            self._router.serve_http_functions(HTTP_FUNCTIONS_WORKER, invoker.check)
            self._invoker = invoker

    def _add_internal(self, worker_id: str, name: str, deliver: Callable[[Message], None]) -> None:
        self._router.connect_internal(worker_id, name)
        self._internal[worker_id] = deliver

    def _submit_internal(self, worker_id: str, msg: Message) -> None:
        self._deliver(self._router.receive(worker_id, msg))

    async def _open_channel_end(self, ref: dict[str, JSON], nursery: trio.Nursery) -> MessageSocket:
        """Attach in-process to one end of a channel (the HTTP server's side of a request's
        channels), through the broker's own routing; its handler runs in ``nursery``."""
        direction = "write" if ref.get("direction") == "write" else "read"
        resource = f"{CHANNEL_PATH}{ref['channel_id']}?key={ref['access_key']}&dir={direction}"
        return await open_memory_websocket(
            self._broker.route,
            resource,
            (),
            max_message_size=self.config.max_channel_frame,
            handler_nursery=nursery,
        )

    # --- invocation deadlines ----------------------------------------------------------------

    def _deadline_added(self, deadline: float) -> None:
        if deadline < self._reaper_until:
            self._reaper_wakeup.set()

    async def _reap_deadlines(self) -> None:
        router = self._router
        while True:
            deadline = router.next_deadline()
            self._reaper_until = math.inf if deadline is None else deadline
            self._reaper_wakeup = trio.Event()
            with trio.move_on_at(self._reaper_until):
                await self._reaper_wakeup.wait()
            self._deliver(router.expire())

    # --- waiting and introspection -----------------------------------------------------------

    def _notify(self) -> None:
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
        functions = self._router.functions
        await self.wait_until(lambda e: functions.lookup(namespace, function_id) is not None)

    def statistics(self) -> EngineStatistics:
        """What the engine holds now, and the counters of its limits (see
        :class:`EngineStatistics`)."""
        router = self._router
        outboxes = [conn.outbox.statistics() for conn in self._connections.values()]
        return EngineStatistics(
            connections=self._sockets,
            connections_refused=self._connections_refused,
            workers=len(router.workers) - len(self._internal),
            functions=len(router.functions),
            invocations=len(router.invocations),
            channels=len(self._broker.channels),
            channels_finished=self._broker.finished,
            channel_buffered_bytes=self._broker.budget.used,
            channel_buffered_peak=self._broker.budget.peak,
            outbox_bytes=sum(s.queued_bytes for s in outboxes),
            outbox_peak=max([self._outbox_peak, *(s.peak_bytes for s in outboxes)]),
            calls_refused=self._calls_refused,
            slow_consumers_dropped=self._slow_consumers,
            unresponsive_dropped=self._unresponsive,
        )


async def _drain_telemetry(config: EngineConfig, ws: MessageSocket) -> None:
    """``/otel``: iii SDKs stream telemetry here; we accept it and drop it. Kept alive like a
    worker connection: a peer that stops answering pings is dropped."""
    async with trio.open_nursery() as nursery:
        if config.ping_interval is not None and isinstance(ws, WebSocket):

            async def watch(ws: WebSocket, interval: float) -> None:
                if await keepalive(ws, interval, config.ping_timeout):
                    logger.info("dropping a telemetry connection: no pong")
                    await ws.abort()

            nursery.start_soon(watch, ws, config.ping_interval)
        try:
            while True:
                await ws.receive()
        except ConnectionClosed:
            pass
        nursery.cancel_scope.cancel()


@final
@attrs.frozen
class LocalDialer:
    """Connects workers to an engine in the same process (:attr:`Engine.local_dialer`).

    As a plain dialer (``await dialer()``) it gives an in-memory byte stream, like
    :meth:`Engine.connect_in_memory`; :func:`connect_worker` instead asks it for whole
    message sockets (:meth:`open_websocket`), so nothing is framed or copied.

    Attributes:
        engine: the engine it connects to.
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
