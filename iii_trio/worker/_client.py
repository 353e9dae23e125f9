"""The trio worker: one connection to an engine, reconnecting when it drops.

Object tree (each owns the next through a nursery): :class:`Worker` (lives for the
``connect_worker`` block; owns channels made with ``create_channel``) → one session per
connection (reader task, writer task) → one task per invocation it runs → that invocation's
channel ends. A lost connection cancels its session's invocations and fails every call the
worker was waiting for with :class:`WorkerDisconnected`, at once.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import socket
import traceback
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, final

import attrs
import trio

from .. import _codes as codes
from .._errors import (
    ConnectError,
    IIIError,
    InvocationError,
    InvocationTimeout,
    LocalProtocolError,
    RegistrationRejected,
    WorkerDisconnected,
    invocation_error,
)
from .._version import __version__
from .._ws import ConnectionClosed, Dialer, MessageSocket, Outbox
from .._ws._client import CONNECT_TIMEOUT
from ..protocol import (
    JSON,
    Action,
    ActionEnqueue,
    ActionVoid,
    Error,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    StreamChannelRef,
    UnregisterFunction,
    WorkerRegistered,
    decode,
    encode,
    new_uuid,
    structure_ref,
)
from ..protocol import (
    RegistrationRejected as RegistrationRejectedMessage,
)
from ._channels import Channel, ChannelEndpoint, ChannelReader, ChannelWriter
from ._connect import connect_engine
from ._functions import FunctionSpec, Handler, make_spec
from ._refs import contains_ref, payload_to_json, replace_refs
from ._triggers import TriggerHandler, TriggerRef, TriggerTypeRef, WorkerTriggers

logger = logging.getLogger("iii_trio.worker")

DEFAULT_URL: Final = "ws://127.0.0.1:49134"
#: Seconds a call waits for its result when the caller gives no timeout (iii's default).
INVOCATION_TIMEOUT: Final = 30.0
#: Largest message accepted from the engine, in bytes (iii's SDKs send up to 64 MiB).
MAX_MESSAGE_SIZE: Final = 80 * 1024 * 1024
#: Reconnect backoff: first delay and cap, in seconds (iii's: 1 s doubling to 30 s, ±30 %).
RECONNECT_DELAY: Final = 1.0
RECONNECT_MAX_DELAY: Final = 30.0
#: Bytes queued for the engine before ``trigger`` calls wait for the writer.
OUTBOX_LIMIT: Final = 8 * 1024 * 1024
_ABORT_GRACE: Final = 1.0  # seconds to tell a channel's peer why we stop, when cancelled

F = TypeVar("F", bound=Callable[..., Any])


@attrs.define(eq=False)
class _Pending:
    session: _Session
    event: trio.Event = attrs.field(factory=trio.Event)
    result: JSON = None
    error: IIIError | None = None


@final
@attrs.frozen
class FunctionRef:
    """A registered function; ``unregister()`` stops serving it."""

    function_id: str
    _worker: Worker

    def unregister(self) -> None:
        self._worker.unregister_function(self.function_id)


class _Session:
    """One live connection: its reader loop, its outbox (whose writer task it runs), its
    invocations. Messages go out through an :class:`Outbox` (see ``iii_trio._ws._outbox``)
    with ``coalesce=True``: a message is written by the sending task itself when the writer is
    idle, and messages sent until the writer has run share one write.
    """

    def __init__(self, worker: Worker, ws: MessageSocket) -> None:
        self.worker = worker
        self.ws = ws
        self.outbox = Outbox(ws, limit=OUTBOX_LIMIT, coalesce=True)
        self.nursery: trio.Nursery | None = None

    def post(self, msg: Message) -> None:
        """Queue ``msg`` without waiting (registrations: their order matters, their number is
        the user's own)."""
        self.outbox.post(encode(msg))

    async def send(self, msg: Message) -> None:
        """Send ``msg``, waiting while the outbox is over its limit. Not a schedule point
        otherwise.

        Raises: WorkerDisconnected (the connection is gone), LocalProtocolError.
        """
        text = encode(msg)
        try:
            await self.outbox.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WorkerDisconnected(
                codes.WORKER_DISCONNECTED, "the connection to the engine was lost"
            ) from exc

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> str:
        """Serve until the connection ends; returns why."""
        worker = self.worker
        reason = "closed"
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.outbox.run)
                # engine::workers::register first, so the engine knows our namespace before
                # the functions arrive; then every registration, replayed on each connect.
                await self.send(
                    InvokeFunction(
                        function_id="engine::workers::register",
                        data=worker.describe(),
                        action=ActionVoid(),
                    )
                )
                # As iii's SDKs do: trigger types, then functions, then bindings.
                triggers = worker._triggers
                for message in triggers.attach(self, nursery):
                    await self.send(message)
                for spec in list(worker.functions.values()):
                    await self.send(spec.message)
                for message in triggers.replay_bindings():
                    await self.send(message)
                triggers.replayed(self)
                task_status.started()
                try:
                    await self._read_loop()
                except ConnectionClosed as exc:
                    reason = f"{exc.code} {exc.reason}".strip()
                nursery.cancel_scope.cancel()
        finally:
            self.outbox.close()
            if not self.ws.closed:
                with trio.CancelScope(shield=True), trio.move_on_after(_ABORT_GRACE):
                    await self.ws.close()
        return reason

    async def _read_loop(self) -> None:
        worker = self.worker
        while True:
            raw = await self.ws.receive()
            try:
                msg = decode(raw)
            except IIIError as exc:
                logger.warning("ignored a bad message from the engine: %s", exc)
                continue
            if isinstance(msg, InvocationResult):
                worker.deliver(msg)
            elif isinstance(msg, InvokeFunction):
                assert self.nursery is not None
                self.nursery.start_soon(self._invoke, msg)
            elif isinstance(msg, WorkerRegistered):
                worker.worker_id = msg.worker_id
                logger.info("connected to %s as worker %s", worker.url, msg.worker_id)
            elif isinstance(msg, RegistrationRejectedMessage):
                worker.rejected(msg)
            elif isinstance(msg, Ping):
                await self.send(Pong())
            elif isinstance(msg, Error):
                logger.warning("engine reported %s: %s", msg.error.code, msg.error.message)
            else:
                await worker.on_message(msg)

    async def _invoke(self, msg: InvokeFunction) -> None:
        worker = self.worker
        spec = worker.functions.get(msg.function_id)
        error: ErrorBody | None = None
        result: Any = None
        if spec is None:
            error = ErrorBody(
                code=codes.FUNCTION_NOT_FOUND, message=f"Function '{msg.function_id}' not found"
            )
        else:
            deadline = math.inf if msg.timeout_ms is None else msg.timeout_ms / 1000
            with trio.move_on_after(deadline) as scope:
                try:
                    result = await worker.run_handler(spec, msg.data)
                except Exception as exc:
                    error = ErrorBody(
                        code=codes.INVOCATION_FAILED,
                        message=str(exc) or type(exc).__name__,
                        stacktrace="".join(traceback.format_exception(exc)),
                    )
            if scope.cancelled_caught:
                logger.warning("%s ran past its deadline and was cancelled", msg.function_id)
                return  # the engine already answered the caller with invocation_timeout
        if msg.invocation_id is None:
            return
        reply = InvocationResult(
            invocation_id=msg.invocation_id,
            function_id=msg.function_id,
            result=None if error is not None else payload_to_json(result),
            error=error,
        )
        try:
            await self.send(reply)
        except LocalProtocolError as exc:
            await self.send(
                attrs.evolve(
                    reply,
                    result=None,
                    error=ErrorBody(
                        code=codes.INVOCATION_FAILED,
                        message=f"the handler's result is not JSON: {exc}",
                    ),
                )
            )
        except WorkerDisconnected:
            pass  # the engine already told the caller invocation_stopped


@final
class Worker:
    """A worker connected to an iii engine. Get one from :func:`connect_worker`."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        namespace: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        reconnect: bool = True,
        invocation_timeout: float = INVOCATION_TIMEOUT,
        dialer: Dialer | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.namespace = namespace
        self.invocation_timeout = invocation_timeout
        self.reconnect = reconnect
        header_list = list((headers or {}).items())
        if token:
            header_list.append(("Authorization", f"Bearer {token}"))
        self._headers = tuple(header_list)
        self._dialer = dialer
        self.connect_timeout = connect_timeout
        self.channels = ChannelEndpoint(url, self._headers, dialer, connect_timeout)
        self.functions: dict[str, FunctionSpec] = {}
        #: Registrations the engine refused, by function id.
        self.rejections: dict[str, RegistrationRejected] = {}
        self._rejection_waiters: dict[str, trio.Event] = {}
        #: The engine's id for this worker on the current connection.
        self.worker_id: str | None = None
        self._session: _Session | None = None
        self._session_changed = trio.Event()
        self._pending: dict[str, _Pending] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self.connections = 0
        self._triggers = WorkerTriggers(self)

    # --- registration ----------------------------------------------------------------------

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str | None = None,
        metadata: JSON = None,
        request_format: JSON = None,
        response_format: JSON = None,
    ) -> FunctionRef:
        """Serve ``function_id`` with ``handler(payload)`` (async, or sync run on a thread).

        Registrations are replayed on every reconnect. Re-registering an id replaces it.

        Raises:
            TypeError: ``handler`` is not callable.
            ValueError: the id is empty or starts with ``engine::``.
        """
        spec = make_spec(
            function_id,
            handler,
            description=description,
            metadata=metadata,
            request_format=request_format,
            response_format=response_format,
        )
        self.functions[function_id] = spec
        self.rejections.pop(function_id, None)
        self._post(spec.message)
        return FunctionRef(function_id, self)

    def function(
        self, function_id: str, *, description: str | None = None, metadata: JSON = None
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`register_function`."""

        def decorate(handler: F) -> F:
            self.register_function(function_id, handler, description=description, metadata=metadata)
            return handler

        return decorate

    def unregister_function(self, function_id: str) -> None:
        """Stop serving ``function_id`` (no-op if it is not registered)."""
        if self.functions.pop(function_id, None) is not None:
            self._post(UnregisterFunction(id=function_id))

    def _post(self, msg: Message) -> None:
        """Queue ``msg`` now, in order with everything sent after it (so a trigger made right
        after ``register_function`` reaches the engine after the registration)."""
        session = self._session
        if session is not None:
            session.post(msg)  # else: replayed on the next connection

    def rejected(self, msg: RegistrationRejectedMessage) -> None:
        function_id = msg.function_id or ""
        logger.error(
            "engine refused %s: %s (owned by worker %s)", function_id, msg.code, msg.owner_worker_id
        )
        self.rejections[function_id] = RegistrationRejected(
            msg.code, f"already registered by worker {msg.owner_worker_id}", function_id=function_id
        )
        event = self._rejection_waiters.pop(function_id, None)
        if event is not None:
            event.set()

    async def wait_rejected(self, function_id: str) -> RegistrationRejected:
        """Wait until the engine refuses ``function_id`` (returns at once if it has)."""
        while function_id not in self.rejections:
            await self._rejection_waiters.setdefault(function_id, trio.Event()).wait()
        await trio.lowlevel.checkpoint()
        return self.rejections[function_id]

    # --- triggers --------------------------------------------------------------------------

    def register_trigger_type(
        self,
        trigger_type: str | Mapping[str, Any],
        handler: TriggerHandler,
        *,
        description: str = "",
        trigger_request_format: JSON = None,
        call_request_format: JSON = None,
    ) -> TriggerTypeRef:
        """Provide the trigger type ``trigger_type``: the engine delivers every binding of it
        to ``handler.register_trigger(binding)`` and calls ``handler.unregister_trigger(binding)``
        when the binding goes (see :class:`TriggerBinding`: it owns a nursery for the binding's
        work, cancelled when the binding goes, and :meth:`TriggerBinding.fire` calls the bound
        function). If ``register_trigger`` raises, the binder is told.

        Also takes iii's input form ``{"id", "description", "trigger_request_format",
        "call_request_format"}``. Replayed on every reconnect; re-registering an id replaces
        the handler for bindings delivered from then on.

        Raises:
            TypeError: ``handler`` lacks ``register_trigger`` / ``unregister_trigger``.
            ValueError: the id is empty.
            LocalProtocolError: a format is not JSON-serializable.
        """
        return self._triggers.register_trigger_type(
            trigger_type,
            handler,
            description=description,
            trigger_request_format=trigger_request_format,
            call_request_format=call_request_format,
        )

    def unregister_trigger_type(self, trigger_type_id: str) -> None:
        """Stop providing ``trigger_type_id`` (no-op if not provided). Its bindings served
        here end (work cancelled, ``unregister_trigger`` called) and wait for a provider."""
        self._triggers.unregister_trigger_type(trigger_type_id)

    def register_trigger(
        self,
        trigger_type: str | Mapping[str, Any],
        function_id: str | None = None,
        config: Any = None,
        *,
        metadata: JSON = None,
        namespace: str | None = None,
        trigger_namespace: str | None = None,
    ) -> TriggerRef:
        """Bind ``function_id`` to ``trigger_type`` with ``config``: the type's provider fires
        the function when its event happens. Returns at once; if the type has no provider yet
        the engine keeps the binding until one registers. Replayed on every reconnect; gone
        when this worker disconnects. A provider's refusal arrives on
        :meth:`TriggerRef.wait_failed`.

        Also takes iii's input form ``{"type", "function_id", "config", "metadata"}``.
        ``namespace`` is where ``function_id`` lives (default: this worker's);
        ``trigger_namespace`` insists on the provider of that namespace.

        Raises:
            ValueError: the trigger type or function id is empty.
            LocalProtocolError: ``config`` or ``metadata`` is not JSON-serializable.
        """
        return self._triggers.register_trigger(
            trigger_type,
            function_id,
            config,
            metadata=metadata,
            namespace=namespace,
            trigger_namespace=trigger_namespace,
        )

    def unregister_trigger(self, trigger_id: str) -> None:
        """Remove a binding made by :meth:`register_trigger` (no-op if unknown)."""
        self._triggers.unregister_trigger(trigger_id)

    async def on_message(self, msg: Message) -> None:
        if await self._triggers.on_message(msg):
            return
        logger.debug("ignored %s from the engine", type(msg).__name__)

    def describe(self) -> JSON:
        info: dict[str, JSON] = {
            "runtime": "python-trio",
            "version": __version__,
            "name": self.name,
            "os": f"{platform.system()} {platform.release()}",
            "pid": os.getpid(),
            "telemetry": {"language": "python", "framework": "iii_trio"},
        }
        if self.namespace:
            info["namespace"] = self.namespace
        return info

    # --- calling ---------------------------------------------------------------------------

    async def trigger(
        self,
        function_id: str | Mapping[str, Any],
        payload: Any = None,
        *,
        timeout: float | None = None,
        action: Action | str | Mapping[str, Any] | None = None,
    ) -> Any:
        """Call a function by id and return its result.

        Also takes iii's request form: ``trigger({"function_id": ..., "payload": ...,
        "action": {"type": "void"}, "timeout_ms": ...})``. With a ``void`` action the call is
        fire-and-forget and returns ``None`` at once. Channel refs and channel ends anywhere in
        ``payload`` are sent as refs. Waits for a connection if there is none (within the
        timeout).

        Raises:
            FunctionNotFound: no worker serves ``function_id``.
            InvocationFailed: the handler raised (``message``, ``stacktrace`` attached).
            InvocationTimeout: no answer within ``timeout`` seconds (default
                ``invocation_timeout``).
            InvocationStopped: the serving worker went away before answering.
            WorkerDisconnected: our connection to the engine dropped during the call.
            InvocationError: any other error code from the engine.
            LocalProtocolError: ``payload`` is not JSON-serializable.
        """
        if isinstance(function_id, Mapping):
            request = function_id
            function_id = request["function_id"]
            payload = request.get("payload")
            action = request.get("action", action)
            if request.get("timeout_ms") is not None:
                timeout = float(request["timeout_ms"]) / 1000
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("function_id must be a non-empty string")
        wire_action = _action(action)
        data = payload_to_json(payload)
        seconds = self.invocation_timeout if timeout is None else timeout
        if isinstance(wire_action, ActionVoid):
            with _timeout_as_error(seconds, function_id):
                session = await self._wait_session()
                await session.send(
                    InvokeFunction(function_id=function_id, data=data, action=wire_action)
                )
                # session.send does not yield when the outbox has room; trigger always does.
                await trio.lowlevel.checkpoint()
            return None
        invocation_id = new_uuid()
        with _timeout_as_error(seconds, function_id):
            session = await self._wait_session()
            pending = _Pending(session)
            self._pending[invocation_id] = pending
            try:
                await session.send(
                    InvokeFunction(
                        invocation_id=invocation_id,
                        function_id=function_id,
                        data=data,
                        action=wire_action,
                        timeout_ms=None if math.isinf(seconds) else max(int(seconds * 1000), 1),
                    )
                )
                await pending.event.wait()
            finally:
                self._pending.pop(invocation_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def deliver(self, msg: InvocationResult) -> None:
        pending = self._pending.get(msg.invocation_id)
        if pending is None:
            return  # timed out or cancelled on our side already
        if msg.error is not None:
            pending.error = invocation_error(
                msg.error.code,
                msg.error.message,
                stacktrace=msg.error.stacktrace,
                function_id=msg.function_id,
            )
        else:
            pending.result = msg.result
        pending.event.set()

    async def _wait_session(self) -> _Session:
        while self._session is None:
            if self._closing:
                raise WorkerDisconnected(codes.WORKER_DISCONNECTED, "the worker is closed")
            await self._session_changed.wait()
        return self._session

    # --- channels --------------------------------------------------------------------------

    async def create_channel(self, buffer_size: int | None = None) -> Channel:
        """Create a channel owned by this worker (closed, if still open, when it closes).

        Hand ``writer_ref``/``reader_ref`` to another function in a trigger payload and use
        the other local end yourself. ``buffer_size`` is iii's frame count for the engine's
        buffer (the engine also bounds it in bytes).

        Raises:
            InvocationError: the engine refused (e.g. ``limit_exceeded``).
        """
        assert self._nursery is not None
        return await self._create_channel(self._nursery, buffer_size)

    @asynccontextmanager
    async def open_channel(self, buffer_size: int | None = None) -> AsyncIterator[Channel]:
        """Create a channel whose local ends belong to this block: on a normal exit the
        writer ends the stream cleanly and the reader is closed; on an exception or a
        cancellation both are aborted, so the other side sees an error, never a clean end.

        On an exception both ends are claimed even if unused (an end whose ref went to a
        call that failed would otherwise keep the channel in the engine until its TTL); a
        remote peer that still tries to attach one of them is refused (409).
        """
        async with trio.open_nursery() as nursery:
            channel = await self._create_channel(nursery, buffer_size)
            ends: list[ChannelReader | ChannelWriter] = [channel.writer, channel.reader]
            try:
                yield channel
            except BaseException as exc:
                for end in ends:
                    end._attach_on_close = True
                await abort_ends(ends, exc)
                raise
            else:
                await close_ends(ends)

    async def _create_channel(self, nursery: trio.Nursery, buffer_size: int | None) -> Channel:
        refs = await self.trigger("engine::channels::create", {"buffer_size": buffer_size})
        try:
            writer_ref = structure_ref(refs["writer"])
            reader_ref = structure_ref(refs["reader"])
        except (KeyError, TypeError, IIIError) as exc:
            raise InvocationError(
                codes.INVALID_MESSAGE, f"engine::channels::create answered {refs!r}"
            ) from exc
        return Channel(
            writer=ChannelWriter(writer_ref, self.channels, nursery, attach_on_close=False),
            reader=ChannelReader(reader_ref, self.channels, nursery, attach_on_close=False),
            writer_ref=writer_ref,
            reader_ref=reader_ref,
        )

    def channel_reader(self, ref: StreamChannelRef | Mapping[str, Any]) -> ChannelReader:
        """A live reader for a reader ref (owned by this worker)."""
        assert self._nursery is not None
        return ChannelReader(_ref(ref), self.channels, self._nursery)

    def channel_writer(self, ref: StreamChannelRef | Mapping[str, Any]) -> ChannelWriter:
        """A live writer for a writer ref (owned by this worker)."""
        assert self._nursery is not None
        return ChannelWriter(_ref(ref), self.channels, self._nursery)

    async def run_handler(self, spec: FunctionSpec, data: JSON) -> Any:
        """Call a handler with channel refs in ``data`` opened as live ends that belong to
        this invocation: closed cleanly when the handler returns, aborted if it raises or is
        cancelled."""
        if not contains_ref(data):
            return await spec.call(data)
        ends: list[ChannelReader | ChannelWriter] = []
        async with trio.open_nursery() as nursery:

            def open_end(ref: StreamChannelRef) -> ChannelReader | ChannelWriter:
                end: ChannelReader | ChannelWriter
                if ref.direction == "read":
                    end = ChannelReader(ref, self.channels, nursery)
                else:
                    end = ChannelWriter(ref, self.channels, nursery)
                ends.append(end)
                return end

            live = replace_refs(data, open_end)
            try:
                result = await spec.call(live)
            except BaseException as exc:
                await abort_ends(ends, exc)
                if isinstance(exc, Exception):
                    failure = exc
                else:
                    raise
            else:
                await close_ends(ends)
                return result
        raise failure

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, and reconnect with backoff until cancelled.

        ``task_status.started(self)`` after the first connection.

        Raises:
            ConnectError: the *first* connection failed (:class:`EngineUnreachable`,
                :class:`HandshakeRefused`, :class:`Unauthorized`); later ones are retried.
            ValueError: the URL is not a ws:// or wss:// URL.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            attempt = 0
            first = True
            while True:
                try:
                    ws = await connect_engine(
                        self.url,
                        headers=self._headers,
                        max_message_size=MAX_MESSAGE_SIZE,
                        dialer=self._dialer,
                        connect_timeout=self.connect_timeout,
                    )
                except ConnectError as exc:
                    if first:
                        raise
                    delay = _backoff(attempt)
                    attempt += 1
                    logger.warning("%s; retrying in %.1fs", exc, delay)
                    await trio.sleep(delay)  # sleep-ok: reconnect backoff
                    continue
                attempt = 0
                session = _Session(self, ws)
                self.connections += 1
                await nursery.start(self._serve_session, session)
                if first:
                    first = False
                    task_status.started(self)
                await self._session_ended.wait()
                if not self.reconnect:
                    self._closing = True
                    self._session_changed.set()
                    break
                delay = _backoff(0)
                logger.warning("lost the engine at %s; reconnecting in %.1fs", self.url, delay)
                await trio.sleep(delay)  # sleep-ok: reconnect backoff
            nursery.cancel_scope.cancel()

    _session_ended: trio.Event

    async def _serve_session(
        self, session: _Session, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._session_ended = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                self._set_session(session)
                task_status.started()
        finally:
            self._set_session(None)
            self._fail_pending(session)
            self._session_ended.set()
        logger.info("disconnected from %s", self.url)

    def _set_session(self, session: _Session | None) -> None:
        self._session = session
        if session is None:
            self.worker_id = None
        self._session_changed.set()
        self._session_changed = trio.Event()

    def _fail_pending(self, session: _Session) -> None:
        for pending in list(self._pending.values()):
            if pending.session is session and not pending.event.is_set():
                pending.error = WorkerDisconnected(
                    codes.WORKER_DISCONNECTED,
                    "the connection to the engine was lost before the result arrived",
                )
                pending.event.set()

    async def sync(self, *, timeout: float | None = None) -> None:
        """Return once the engine has processed everything this worker sent before the call
        (one round trip on the same, ordered connection). Use it after
        ``register_function`` before telling *other* workers to call the function.

        Raises:
            InvocationTimeout, WorkerDisconnected: as :meth:`trigger`.
        """
        await self.trigger("engine::functions::list", {"prefix": "\x00"}, timeout=timeout)

    async def wait_connected(self) -> None:
        """Return once the worker has a live connection."""
        await self._wait_session()

    @property
    def connected(self) -> bool:
        return self._session is not None


def _backoff(attempt: int) -> float:
    delay: float = min(RECONNECT_DELAY * 2.0**attempt, RECONNECT_MAX_DELAY)
    return delay * random.uniform(0.7, 1.3)


def _action(action: Action | str | Mapping[str, Any] | None) -> Action | None:
    if action is None or isinstance(action, ActionVoid | ActionEnqueue):
        return action
    if action == "void":
        return ActionVoid()
    if isinstance(action, Mapping):
        if action.get("type") == "void":
            return ActionVoid()
        if action.get("type") == "enqueue" and isinstance(action.get("queue"), str):
            return ActionEnqueue(queue=action["queue"])
    if hasattr(action, "model_dump"):  # the official SDK's TriggerAction objects
        return _action(action.model_dump())
    raise ValueError(f"unknown action {action!r}; use 'void' or {{'type': 'void'}}")


def _ref(ref: StreamChannelRef | Mapping[str, Any]) -> StreamChannelRef:
    if isinstance(ref, StreamChannelRef):
        return ref
    return structure_ref(dict(ref))


class _timeout_as_error:
    """``fail_after`` that raises :class:`InvocationTimeout` instead of ``TooSlowError``."""

    def __init__(self, seconds: float, function_id: str) -> None:
        self._scope = trio.move_on_after(seconds)
        self._seconds = seconds
        self._function_id = function_id

    def __enter__(self) -> None:
        self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        suppressed = self._scope.__exit__(*exc_info)
        if self._scope.cancelled_caught:
            raise InvocationTimeout(
                codes.INVOCATION_TIMEOUT,
                f"no answer from '{self._function_id}' within {self._seconds}s",
                function_id=self._function_id,
            )
        return bool(suppressed)


async def close_ends(ends: list[ChannelReader | ChannelWriter]) -> None:
    """Close channel ends cleanly (writers deliver their end of stream)."""
    for end in ends:
        await end.aclose()


async def abort_ends(ends: list[ChannelReader | ChannelWriter], exc: BaseException) -> None:
    """Abort channel ends so their peers see an error naming ``exc``; works when cancelled."""
    reason = "cancelled" if isinstance(exc, trio.Cancelled) else f"{type(exc).__name__}: {exc}"
    with trio.CancelScope(shield=True), trio.move_on_after(_ABORT_GRACE):
        for end in ends:
            await end.abort(reason[:100])
    for end in ends:  # past the grace period: drop whatever is left
        await trio.aclose_forcefully(end)


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

    ``url`` defaults to ``$III_URL`` or ``ws://127.0.0.1:49134``; ``token`` to ``$III_TOKEN``.
    ``dialer`` replaces TCP for every socket the worker opens (see
    :meth:`iii_trio.Engine.connect_in_memory` for an engine in the same process).
    ``connect_timeout`` bounds each WebSocket opening handshake (the worker's own and every
    channel socket's); raise it for engines under heavy load.
    On exit the connection closes and every channel the worker owns is closed.

    Raises:
        ConnectError: the first connection failed, as one of its subclasses (never inside an
            ``ExceptionGroup``): :class:`~iii_trio.EngineUnreachable` (nothing answered, or
            no upgrade within ``connect_timeout``), :class:`~iii_trio.Unauthorized` (HTTP 401:
            token missing or rejected), :class:`~iii_trio.HandshakeRefused` (another HTTP
            answer, e.g. 404 for a wrong path).
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
    connected = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            connected = True
            try:
                yield worker
            finally:
                worker._closing = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The first connection failed: raise what failed (as documented), not the nursery's
        # wrapping of it.
        leaf = _leaf(group)
        if not connected and leaf is not group:
            raise leaf from leaf.__cause__
        raise


def _leaf(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
