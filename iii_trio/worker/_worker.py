"""The trio worker: the :class:`Worker` facade and its reconnecting connection.

Object tree (each owns the next through a nursery): :class:`Worker` (lives for the
``connect_worker`` block; owns channels made with ``create_channel``) → one
:class:`~._session.Session` per connection (reader and writer tasks) → the invocations it runs
(:mod:`._dispatch`; a task each, unless the handler returns without waiting) → each
invocation's channel ends. A lost connection cancels its
session's work and fails every call the worker was waiting for with
:class:`~iii_trio.WorkerDisconnected`, at once (:mod:`._calls`); the worker then reconnects with
backoff and replays its registrations, in the order iii's SDKs use.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, TypeVar, final

import attrs
import trio

from .. import _codes as codes
from .._errors import (
    ConnectError,
    RegistrationRejected,
    WorkerDisconnected,
)
from .._unwrap import open_nursery
from .._version import __version__
from .._ws import Dialer
from .._ws._client import CONNECT_TIMEOUT
from ..protocol import (
    JSON,
    Action,
    ActionVoid,
    Error,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RelayedInvoke,
    RelayedResult,
    UnregisterFunction,
    WorkerRegistered,
    channel_ids,
    encode,
    encode_call,
    new_call_id,
    new_uuid,
)
from ..protocol import RegistrationRejected as RegistrationRejectedMessage
from ._calls import PendingCalls, follow_progress, stalled, timeout_as_error, to_action
from ._channel_api import ChannelAPI
from ._channels import ChannelEndpoint
from ._connect import backoff, connect_engine
from ._dispatch import submit_invocation
from ._functions import FunctionSpec, Handler, make_spec
from ._http import HttpAPI
from ._refs import payload_to_json
from ._session import Session
from ._triggers import TriggerHandler, TriggerRef, TriggerTypeRef, WorkerTriggers

logger = logging.getLogger("iii_trio.worker")

DEFAULT_URL: Final = "ws://127.0.0.1:49134"
#: Seconds a call waits for its result when the caller gives no timeout (iii's default).
INVOCATION_TIMEOUT: Final = 30.0
#: Largest message accepted from the engine, in bytes (iii's SDKs send up to 64 MiB).
MAX_MESSAGE_SIZE: Final = 80 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


@final
@attrs.frozen
class FunctionRef:
    """A registered function; ``unregister()`` stops serving it.

    Attributes:
        function_id: the function's id.
    """

    function_id: str
    _worker: Worker

    def unregister(self) -> None:
        """Stop serving the function (no-op if it is no longer registered)."""
        self._worker.unregister_function(self.function_id)


@final
class Worker(ChannelAPI, HttpAPI):
    """A worker connected to an iii engine. Get one from :func:`connect_worker`.

    Attributes:
        url: the engine's URL.
        name: the name the worker registers with (default ``hostname:pid``).
        namespace: where its functions live (``None``: iii's default namespace).
        invocation_timeout: seconds :meth:`trigger` waits when given no ``timeout``.
        reconnect: whether a lost connection is re-established (with backoff).
        connect_timeout: seconds each WebSocket opening handshake may take.
        functions: the functions this worker serves, by id.
        rejections: registrations the engine refused, by function id.
        worker_id: the engine's id for this worker on the current connection (``None``
            while disconnected).
        connections: how many connections were made so far (reconnects included).
    """

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
        super().__init__()
        self.url = url
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.namespace = namespace
        self.invocation_timeout = invocation_timeout
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        header_list = list((headers or {}).items())
        if token:
            header_list.append(("Authorization", f"Bearer {token}"))
        self._headers = tuple(header_list)
        self._dialer = dialer
        self._endpoint = ChannelEndpoint(url, self._headers, dialer, connect_timeout)
        self.functions: dict[str, FunctionSpec] = {}
        self.rejections: dict[str, RegistrationRejected] = {}
        self._rejection_waiters: dict[str, trio.Event] = {}
        self.worker_id: str | None = None
        self.connections = 0
        self._session: Session | None = None
        self._session_changed = trio.Event()
        self._session_ended = trio.Event()
        self._calls = PendingCalls()
        self._resume: Reattach | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._triggers = WorkerTriggers(self._post, self.trigger, lambda: self.namespace)

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

        Registrations are replayed on every reconnect. Re-registering an id replaces it. A
        refusal by the engine arrives in :attr:`rejections` (see :meth:`wait_rejected`).

        Raises:
            TypeError: ``handler`` is not callable.
            ValueError: the id is empty or starts with ``engine::``.
            LocalProtocolError: ``metadata`` or a format is not JSON-serializable.
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
        """Decorator form of :meth:`register_function`.

        Raises:
            ValueError, LocalProtocolError: as :meth:`register_function`.
        """

        def decorate(handler: F) -> F:
            self.register_function(function_id, handler, description=description, metadata=metadata)
            return handler

        return decorate

    def unregister_function(self, function_id: str) -> None:
        """Stop serving ``function_id`` (no-op if it is not registered)."""
        if self.functions.pop(function_id, None) is not None:
            self._post(UnregisterFunction(id=function_id))

    async def wait_rejected(self, function_id: str) -> RegistrationRejected:
        """Wait until the engine refuses ``function_id`` (returns at once if it has) and
        return the refusal (its ``code`` says why: ``FUNCTION_NAMESPACE_CONFLICT``,
        ``limit_exceeded``)."""
        while function_id not in self.rejections:
            await self._rejection_waiters.setdefault(function_id, trio.Event()).wait()
        await trio.lowlevel.checkpoint()
        return self.rejections[function_id]

    def _post(self, msg: Message) -> None:
        """Queue ``msg`` now, in order with everything sent after it (so a trigger made right
        after ``register_function`` reaches the engine after the registration); while
        disconnected, nothing: the next connection replays the current registrations."""
        session = self._session
        if session is not None:
            session.post(msg)

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
        fire-and-forget and returns ``None`` once it is handed to the engine. Channel refs and
        channel ends anywhere in ``payload`` are sent as refs. Waits for a connection if there
        is none (within the timeout).

        Raises:
            FunctionNotFound: no worker serves ``function_id``.
            InvocationFailed: the handler raised (``message``, ``stacktrace`` attached).
            InvocationTimeout: no answer within ``timeout`` seconds (default
                ``invocation_timeout``).
            InvocationStopped: the serving worker went away before answering.
            WorkerOverloaded: the serving worker does not read its connection; refused at once.
            WorkerDisconnected: our connection to the engine dropped during the call.
            InvocationError: any other error code from the engine.
            LocalProtocolError: ``payload`` is not JSON-serializable.
            ValueError: ``function_id`` is empty, or ``action`` is unknown.
        """
        if type(function_id) is not str and isinstance(function_id, Mapping):
            request = function_id
            function_id = request["function_id"]
            payload = request.get("payload")
            action = request.get("action", action)
            if request.get("timeout_ms") is not None:
                timeout = float(request["timeout_ms"]) / 1000
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("function_id must be a non-empty string")
        wire_action = to_action(action)
        data = payload_to_json(payload)
        seconds = self.invocation_timeout if timeout is None else timeout
        if isinstance(wire_action, ActionVoid):
            with timeout_as_error(seconds, function_id):
                session = await self._wait_session()
                await session.send(
                    InvokeFunction(function_id=function_id, data=data, action=wire_action)
                )
                # session.send does not yield when the outbox has room; trigger always does.
                await trio.lowlevel.checkpoint()
            return None
        if channel_ids(data):
            return await self._call_streaming(function_id, data, wire_action, seconds)
        invocation_id = new_call_id()
        timeout_ms = None if math.isinf(seconds) else max(int(seconds * 1000), 1)
        if wire_action is None:
            text = encode_call(function_id, invocation_id, data, timeout_ms)
        else:
            text = encode(
                InvokeFunction(
                    invocation_id=invocation_id,
                    function_id=function_id,
                    data=data,
                    action=wire_action,
                    timeout_ms=timeout_ms,
                )
            )
        with timeout_as_error(seconds, function_id):
            current = self._session
            if current is None:
                current = await self._wait_session()
            call = self._calls.add(invocation_id, current)
            try:
                # With other calls in flight, more sends are likely in this same pass of the
                # scheduler (their answers come in bursts): queue, to share one write.
                if not current.outbox.send_nowait(text, burst=len(self._calls) > 1):
                    await current.send_encoded(text)  # waits for room, or says why not
                await call.wait()
            finally:
                self._calls.discard(invocation_id)
        return call.outcome()

    async def _call_streaming(
        self, function_id: str, data: JSON, action: Action | None, seconds: float
    ) -> Any:
        """A call whose payload carries channel refs: its deadline follows the progress of
        those channels this worker holds (the engine applies the same rule to all of them;
        with none held here, the engine's verdict is awaited)."""
        held = [c for i in channel_ids(data) if (c := self._local_channels.get(i)) is not None]
        invocation_id = new_uuid()
        with timeout_as_error(seconds, function_id):
            session = await self._wait_session()
        call = self._calls.add(invocation_id, session)
        now = trio.current_time()
        try:
            with trio.CancelScope() as scope:
                async with open_nursery() as nursery:
                    if held and math.isfinite(seconds):
                        nursery.start_soon(
                            partial(follow_progress, scope, seconds, held, since=now)
                        )
                    await session.send(
                        InvokeFunction(
                            invocation_id=invocation_id,
                            function_id=function_id,
                            data=data,
                            action=action,
                            timeout_ms=None if math.isinf(seconds) else max(int(seconds * 1000), 1),
                        )
                    )
                    await call.wait()
                    nursery.cancel_scope.cancel()
        finally:
            self._calls.discard(invocation_id)
        if scope.cancelled_caught:
            raise stalled(function_id, seconds)
        return call.outcome()

    async def sync(self, *, timeout: float | None = None) -> None:
        """Return once the engine has processed everything this worker sent before the call
        (one round trip on the same, ordered connection). Use it after
        ``register_function`` before telling *other* workers to call the function.

        Raises:
            InvocationTimeout, WorkerDisconnected: as :meth:`trigger`.
        """
        await self.trigger("engine::functions::list", {"prefix": "\x00"}, timeout=timeout)

    # --- the connection --------------------------------------------------------------------

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
                    delay = backoff(attempt)
                    attempt += 1
                    logger.warning("%s; retrying in %.1fs", exc, delay)
                    await trio.sleep(delay)  # sleep-ok: reconnect backoff
                    continue
                attempt = 0
                self.connections += 1
                await nursery.start(self._serve, Session(ws, self._on_message))
                if first:
                    first = False
                    task_status.started(self)
                await self._session_ended.wait()
                if not self.reconnect:
                    self._closing = True
                    self._session_changed.set()
                    break
                delay = backoff(0)
                logger.warning("lost the engine; reconnecting in %.1fs", delay)
                await trio.sleep(delay)  # sleep-ok: reconnect backoff
            nursery.cancel_scope.cancel()

    async def _serve(
        self, session: Session, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # In one step: replay the registrations, then make the session current, so nothing
        # registered meanwhile is missed and everything keeps its order.
        for msg in self._hello():
            session.post(msg)
        self._session_ended = trio.Event()
        self._set_session(session)
        try:
            await session.run(task_status=task_status)
        finally:
            self._set_session(None)
            self._calls.fail_session(session)
            self._session_ended.set()
            logger.info("disconnected from the engine")

    def _hello(self) -> list[Message]:
        """What a new connection sends first: ``engine::workers::register`` (so the engine
        knows our namespace before the functions arrive), then every registration, as iii's
        SDKs order them: trigger types, functions, bindings."""
        register = InvokeFunction(
            function_id="engine::workers::register", data=self._describe(), action=ActionVoid()
        )
        # iii's session resumption: the engine evicts our previous connection if it has not
        # noticed yet that it is dead, so our replayed registrations find their names free.
        resume: list[Message] = [] if self._resume is None else [self._resume]
        return [
            *resume,
            register,
            *self._triggers.replay_types(),
            *(spec.message for spec in self.functions.values()),
            *self._triggers.replay_bindings(),
        ]

    def _set_session(self, session: Session | None) -> None:
        self._session = session
        self._triggers.attach(session)
        if session is None:
            self.worker_id = None
        self._session_changed.set()
        self._session_changed = trio.Event()

    async def _wait_session(self) -> Session:
        while self._session is None:
            if self._closing:
                raise WorkerDisconnected(codes.WORKER_DISCONNECTED, "the worker is closed")
            await self._session_changed.wait()
        return self._session

    def _on_message(self, session: Session, msg: Message | RelayedInvoke | RelayedResult) -> None:
        """One message from the engine (the session's reader; must not block)."""
        if isinstance(msg, RelayedResult | InvocationResult):
            self._calls.deliver(msg)
        elif isinstance(msg, RelayedInvoke | InvokeFunction):
            spec = self.functions.get(msg.function_id)
            submit_invocation(session, msg, spec, self._endpoint)
        elif isinstance(msg, WorkerRegistered):
            self.worker_id = msg.worker_id
            if msg.reattach_token:
                self._resume = Reattach(
                    previous_worker_id=msg.worker_id, reattach_token=msg.reattach_token
                )
            logger.info("connected to the engine as worker %s", msg.worker_id)
        elif isinstance(msg, RegistrationRejectedMessage):
            self._on_rejected(msg)
        elif isinstance(msg, Ping):
            session.post(Pong())
        elif isinstance(msg, Error):
            logger.warning("engine reported %s: %s", msg.error.code, msg.error.message)
        elif not self._triggers.on_message(msg):
            logger.debug("ignored %s from the engine", type(msg).__name__)

    def _on_rejected(self, msg: RegistrationRejectedMessage) -> None:
        function_id = msg.function_id or ""
        logger.error(
            "engine refused %s: %s (owned by worker %s)", function_id, msg.code, msg.owner_worker_id
        )
        reason = (
            f"already registered by worker {msg.owner_worker_id}"
            if msg.code == codes.FUNCTION_NAMESPACE_CONFLICT
            else "refused by the engine"
        )
        self.rejections[function_id] = RegistrationRejected(
            msg.code, reason, function_id=function_id
        )
        event = self._rejection_waiters.pop(function_id, None)
        if event is not None:
            event.set()

    def _describe(self) -> JSON:
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

    async def wait_connected(self) -> None:
        """Return once the worker has a live connection.

        Raises:
            WorkerDisconnected: the worker was closed.
        """
        await self._wait_session()

    @property
    def connected(self) -> bool:
        """Whether the worker has a live connection now."""
        return self._session is not None
