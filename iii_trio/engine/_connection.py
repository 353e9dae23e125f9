"""One worker's control connection, on the engine side.

Two tasks in the connection's nursery: the reader decodes frames and dispatches them; the
writer drains a bounded outbox, coalescing whatever is queued into one socket write. Anything
sent to this worker from elsewhere in the engine goes through :meth:`WorkerConnection.send`
(or :meth:`WorkerConnection.post`).

When the writer is idle (nothing queued, nothing in hand, nobody writing) and the message
ends a burst (the reader that routes it has nothing more buffered), the sending task writes
the message itself, with one non-blocking system call and no schedule point
(``WebSocket.send_many_nowait``): a call routed through the engine then costs no task switch
at all, where the hand-off to the writer costs two. Order is kept: the direct path is taken
only when nothing sent earlier can still be waiting, and bytes the socket did not take go out
before anything queued later. Within a burst, messages are queued so that the writer sends
them in one write (fewer, larger writes when many calls are in flight).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Final, final

import trio

from .. import _codes as codes
from .._errors import RemoteProtocolError
from .._ws import ConnectionClosed, MessageSocket
from ..protocol import (
    JSON,
    ActionEnqueue,
    ActionVoid,
    Error,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegistrationRejected,
    UnregisterFunction,
    WorkerRegistered,
    decode,
    encode,
    is_ignored_tag,
    loads,
    new_uuid,
)
from ._builtins import BUILTINS, BuiltinError
from ._invocations import Invocation
from ._registry import DEFAULT_NAMESPACE, RESERVED_PREFIX, FunctionEntry

if TYPE_CHECKING:
    from ._engine import Engine

logger = logging.getLogger("iii_trio.engine")

#: Messages queued for one worker before senders wait (backpressure towards the engine).
OUTBOX_SIZE: Final = 512
#: Messages routed from one worker before its reader lets other tasks run.
_YIELD_EVERY: Final = 8
#: Messages written per socket write at most.
_BATCH: Final = 256
_TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")
#: Seconds a stopping engine spends flushing and closing one connection.
_GOODBYE_TIMEOUT: Final = 2.0


class SendFailed(Exception):
    """The worker's connection is gone; nothing more can be sent to it."""


@final
class WorkerConnection:
    """A connected worker, as the engine sees it."""

    def __init__(self, engine: Engine, peer: str) -> None:
        self.engine = engine
        self.peer = peer
        self.worker_id = new_uuid()
        self.reattach_token = new_uuid()
        self.namespace = DEFAULT_NAMESPACE
        #: What the worker said about itself in ``engine::workers::register``.
        self.info: dict[str, JSON] = {}
        self.connected_at_ms = int(time.time() * 1000)
        self.bad_messages = 0
        #: ``None`` in the outbox asks the writer to write the WebSocket's tail (see ``_write_now``).
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[str | None](OUTBOX_SIZE)
        self._read_scope = trio.CancelScope()
        self._ws: MessageSocket | None = None
        #: True while the writer waits for the outbox with nothing in hand: a message can
        #: then be written at once by the sender. Cleared by every message queued.
        self._writer_idle = False
        self._outbox_closed = False

    def stop(self) -> None:
        """Stop reading from this worker; queued messages are still delivered, then the
        connection closes with 1001."""
        self._read_scope.cancel()

    @property
    def name(self) -> str:
        name = self.info.get("name")
        return name if isinstance(name, str) else self.worker_id

    async def send(self, msg: Message, *, burst: bool = False) -> None:
        """Send ``msg`` to this worker, waiting while its outbox is full (and only then:
        this is not a schedule point when there is room). ``burst=True``: more messages
        are coming right after this one, so queue it for a coalesced write.

        Raises:
            SendFailed: the connection is closed or closing.
        """
        text = encode(msg)
        if not burst and self._write_now(text):
            return
        try:
            # No schedule point when the outbox has room: a reader task routing a burst of
            # messages then queues them all before the writer task wakes, and the writer sends
            # them in one socket write. (A memory channel's ``send`` yields on every call.)
            self._outbox_send.send_nowait(text)
        except trio.WouldBlock:
            try:
                await self._outbox_send.send(text)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise SendFailed(self.worker_id) from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise SendFailed(self.worker_id) from exc
        self._writer_idle = False

    def post(self, msg: Message) -> None:
        """Queue ``msg`` without waiting (a task waits for room if the outbox is full)."""
        text = encode(msg)
        if self._write_now(text):
            return
        try:
            self._outbox_send.send_nowait(text)
        except trio.WouldBlock:
            self.engine.spawn(self._send_quietly, msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection is gone; its own cleanup answers for it
        else:
            self._writer_idle = False

    def _write_now(self, text: str) -> bool:
        """Write ``text`` from the calling task if the writer is idle (see the module
        docstring); False if it must be queued instead."""
        ws = self._ws
        if not self._writer_idle or ws is None or not ws.send_many_nowait((text,)):
            return False
        if ws.tail_pending:
            # The socket took part of it: the writer writes the rest (the outbox was empty,
            # so there is room for the request).
            self._writer_idle = False
            try:
                self._outbox_send.send_nowait(None)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # closing: ``_flush`` writes the tail, or the socket is gone
        return True

    async def _send_quietly(self, msg: Message) -> None:
        try:
            await self.send(msg)
        except SendFailed:
            pass  # the connection went away while we waited; nothing left to tell

    async def run(self, ws: MessageSocket) -> None:
        """Serve the connection until either side closes it."""
        engine = self.engine
        engine.workers[self.worker_id] = self
        engine.notify()
        logger.info("worker %s connected from %s", self.worker_id, self.peer)
        reason = "closed"
        try:
            self.post(
                WorkerRegistered(worker_id=self.worker_id, reattach_token=self.reattach_token)
            )
            self._ws = ws
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, ws)
                with self._read_scope:
                    try:
                        await self._read_loop(ws)
                    except ConnectionClosed as exc:
                        reason = f"{exc.code} {exc.reason}".strip()
                if self._read_scope.cancelled_caught:
                    # stop(): let the writer deliver everything queued, then say goodbye.
                    self._close_outbox()
                else:
                    nursery.cancel_scope.cancel()
        finally:
            engine.forget_worker(self)
            if not ws.closed:
                # The engine is stopping (we were cancelled): deliver what is already queued
                # for this worker, then say goodbye with 1001.
                with trio.CancelScope(shield=True), trio.move_on_after(_GOODBYE_TIMEOUT):
                    await self._flush(ws)
                    await ws.close(1001, "engine shutting down")
                reason = "engine shutting down"
            self._close_outbox()
            self._outbox_receive.close()
            logger.info("worker %s (%s) disconnected: %s", self.worker_id, self.name, reason)

    def _close_outbox(self) -> None:
        # From here on every message goes through the (closed) outbox: refused.
        self._outbox_closed = True
        self._writer_idle = False
        self._outbox_send.close()

    async def _flush(self, ws: MessageSocket) -> None:
        batch: list[str] = []
        while True:
            try:
                text = self._outbox_receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if text is not None:
                batch.append(text)
        try:
            await ws.send_many(batch)  # with the tail of a partial direct write, if any
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the worker is gone already

    async def _write_loop(self, ws: MessageSocket) -> None:
        receive = self._outbox_receive
        try:
            while True:
                try:
                    first = receive.receive_nowait()
                except trio.WouldBlock:
                    # Nothing queued and nothing in hand: senders may write directly until
                    # they queue something (which clears the flag and wakes us).
                    self._writer_idle = not self._outbox_closed
                    try:
                        first = await receive.receive()
                    finally:
                        self._writer_idle = False
                batch = [] if first is None else [first]
                while len(batch) < _BATCH:
                    try:
                        text = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if text is not None:
                        batch.append(text)
                await ws.send_many(batch)  # writes the tail of a partial direct write first
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the socket is closing or gone; the reader loop sees that and ends the session

    async def _read_loop(self, ws: MessageSocket) -> None:
        unyielded = 0
        while True:
            unyielded += 1
            if unyielded > _YIELD_EVERY:
                # Routing does not yield while the outboxes have room, and a socket read can
                # hold many messages. Yield now and then, so that writers send what is routed
                # so far and the next process can start on it while we go on: the processes
                # of a call work in parallel instead of passing one big batch around.
                unyielded = 0
                await trio.lowlevel.checkpoint()
            raw = await ws.receive()
            if isinstance(raw, bytes) and raw[:4] in _TELEMETRY_PREFIXES:
                continue  # iii telemetry frames (OTLP/MTRC/LOGS): accepted and dropped
            try:
                msg = decode(raw)
            except RemoteProtocolError as exc:
                await self._on_bad_message(raw, exc)
                continue
            await self.dispatch(msg, burst=ws.receive_buffered)

    async def _on_bad_message(self, raw: str | bytes, exc: RemoteProtocolError) -> None:
        try:
            obj = loads(raw)
        except RemoteProtocolError:
            obj = None
        if is_ignored_tag(obj):
            logger.debug("ignored %r message from %s", obj["type"], self.worker_id)  # type: ignore[index,call-overload]
            return
        self.bad_messages += 1
        logger.warning("bad message from worker %s: %s", self.worker_id, exc)
        invocation = _salvage_invocation(obj)
        if invocation is not None:
            invocation_id, function_id = invocation
            await self.send(
                InvocationResult(
                    invocation_id=invocation_id,
                    function_id=function_id,
                    error=ErrorBody(code=exc.hint, message=str(exc)),
                )
            )
        else:
            await self.send(Error(error=ErrorBody(code=exc.hint, message=str(exc))))

    async def dispatch(self, msg: Message, *, burst: bool = False) -> None:
        if isinstance(msg, InvokeFunction):
            await self._on_invoke(msg, burst=burst)
        elif isinstance(msg, InvocationResult):
            await self._on_result(msg, burst=burst)
        elif isinstance(msg, RegisterFunction):
            await self._on_register(msg)
        elif isinstance(msg, UnregisterFunction):
            if self.engine.registry.unregister(self.namespace, msg.id, self.worker_id):
                logger.info("worker %s unregistered %s", self.worker_id, msg.id)
                self.engine.notify()
        elif isinstance(msg, Ping):
            await self.send(Pong())
        elif isinstance(msg, Pong | Reattach):
            pass  # keepalive answer / iii session resumption (we always start fresh)
        elif isinstance(msg, WorkerRegistered | RegistrationRejected | Error):
            await self.send(
                Error(
                    error=ErrorBody(
                        code=codes.INVALID_MESSAGE,
                        message=f"{type(msg).__name__} is sent by the engine, not to it",
                    )
                )
            )
        else:
            await self.engine.on_peripheral(self, msg)

    # --- functions ---------------------------------------------------------------------------

    async def _on_register(self, msg: RegisterFunction) -> None:
        if msg.id.startswith(RESERVED_PREFIX) or not msg.id:
            await self._reject(msg.id, owner="engine")
            return
        if msg.invocation is not None:
            logger.warning(
                "worker %s registered HTTP-invoked function %s; iii_trio does not call HTTP "
                "endpoints, so calls to it fail with function_not_invokable",
                self.worker_id,
                msg.id,
            )
        entry = FunctionEntry(
            namespace=self.namespace,
            function_id=msg.id,
            worker_id=self.worker_id,
            description=msg.description,
            metadata=msg.metadata,
            request_format=msg.request_format,
            response_format=msg.response_format,
            http=msg.invocation is not None,
        )
        conflict = self.engine.registry.register(entry)
        if conflict is not None:
            await self._reject(msg.id, owner=conflict.worker_id)
        else:
            logger.info("worker %s registered %s", self.worker_id, msg.id)

    async def _reject(self, function_id: str, *, owner: str) -> None:
        logger.warning(
            "refused %s from worker %s: already registered by %s",
            function_id,
            self.worker_id,
            owner,
        )
        await self.send(
            RegistrationRejected(
                code=codes.FUNCTION_NAMESPACE_CONFLICT,
                namespace=self.namespace,
                function_id=function_id,
                owner_worker_id=owner,
                worker_name=self.name,
            )
        )

    def move_to_namespace(self, namespace: str) -> list[str]:
        """Re-home this worker's functions after it named its namespace; returns conflicts."""
        registry = self.engine.registry
        if namespace == self.namespace:
            return []
        owned = registry.owned_by(self.worker_id)
        self.namespace = namespace
        conflicts = []
        for entry in owned:
            registry.unregister(entry.namespace, entry.function_id, self.worker_id)
            moved = FunctionEntry(
                namespace=namespace,
                function_id=entry.function_id,
                worker_id=self.worker_id,
                description=entry.description,
                metadata=entry.metadata,
                request_format=entry.request_format,
                response_format=entry.response_format,
                http=entry.http,
            )
            if registry.register(moved) is not None:
                conflicts.append(entry.function_id)
        return conflicts

    # --- invocations -------------------------------------------------------------------------

    async def _reply_error(self, msg: InvokeFunction, code: str, message: str) -> None:
        if msg.invocation_id is None or isinstance(msg.action, ActionVoid):
            logger.info("void call to %s failed: %s: %s", msg.function_id, code, message)
            return
        await self.send(
            InvocationResult(
                invocation_id=msg.invocation_id,
                function_id=msg.function_id,
                error=ErrorBody(code=code, message=message),
            )
        )

    async def _on_invoke(self, msg: InvokeFunction, *, burst: bool = False) -> None:
        engine = self.engine
        function_id = msg.function_id
        if isinstance(msg.action, ActionEnqueue):
            await self._reply_error(
                msg, codes.ENQUEUE_ERROR, "iii_trio has no queue worker; enqueue is not supported"
            )
            return
        if engine.shutting_down:
            await self._reply_error(msg, codes.ENGINE_SHUTDOWN, "the engine is shutting down")
            return
        builtin = BUILTINS.get(function_id) if function_id.startswith(RESERVED_PREFIX) else None
        if builtin is not None:
            try:
                result = builtin(engine, self, msg.data)
            except BuiltinError as exc:
                await self._reply_error(msg, exc.code, exc.message)
                return
            if msg.invocation_id is not None and not isinstance(msg.action, ActionVoid):
                await self.send(
                    InvocationResult(
                        invocation_id=msg.invocation_id, function_id=function_id, result=result
                    )
                )
            return
        entry = engine.registry.lookup(msg.namespace or DEFAULT_NAMESPACE, function_id)
        executor = engine.workers.get(entry.worker_id) if entry is not None else None
        if entry is None or executor is None:
            await self._reply_error(
                msg, codes.FUNCTION_NOT_FOUND, f"Function '{function_id}' not found"
            )
            return
        if entry.http:
            await self._reply_error(
                msg,
                codes.FUNCTION_NOT_INVOKABLE,
                f"Function '{function_id}' is HTTP-invoked, which iii_trio does not support",
            )
            return
        config = engine.config
        invocations = engine.invocations
        if invocations.pending_calls(self.worker_id) >= config.max_pending_invocations:
            await self._reply_error(
                msg,
                codes.LIMIT_EXCEEDED,
                f"more than {config.max_pending_invocations} invocations pending on this connection",
            )
            return
        timeout = config.invocation_timeout
        if msg.timeout_ms is not None:
            timeout = min(msg.timeout_ms / 1000, config.max_invocation_timeout)
        now = trio.current_time()
        wants_reply = msg.invocation_id is not None and not isinstance(msg.action, ActionVoid)
        target_id = invocations.new_target_id(msg.invocation_id)
        inv = Invocation(
            target_id=target_id,
            caller_id=msg.invocation_id if wants_reply else None,
            function_id=function_id,
            caller=self.worker_id,
            executor=executor.worker_id,
            deadline=now + timeout,
            started=now,
        )
        invocations.add(inv)
        engine.deadline_added(inv.deadline)
        engine.notify()
        data = msg.data
        if isinstance(data, dict):
            data = {**data, "_caller_worker_id": self.worker_id}
        try:
            await executor.send(
                InvokeFunction(
                    invocation_id=target_id,
                    function_id=function_id,
                    data=data,
                    traceparent=msg.traceparent,
                    baggage=msg.baggage,
                    metadata=msg.metadata,
                    timeout_ms=int(timeout * 1000),
                ),
                burst=burst,
            )
        except SendFailed:
            if invocations.complete(target_id, executor.worker_id) is not None:
                await self._reply_error(
                    msg, codes.INVOCATION_STOPPED, f"worker serving '{function_id}' disconnected"
                )

    async def _on_result(self, msg: InvocationResult, *, burst: bool = False) -> None:
        engine = self.engine
        inv = engine.invocations.complete(msg.invocation_id, self.worker_id)
        engine.notify()
        if inv is None:
            logger.debug(
                "ignored result for %s from %s: not an invocation it was asked to run",
                msg.invocation_id,
                self.worker_id,
            )
            return
        if inv.caller_id is None:
            return
        caller = engine.workers.get(inv.caller)
        if caller is None:
            return
        try:
            await caller.send(
                InvocationResult(
                    invocation_id=inv.caller_id,
                    function_id=inv.function_id,
                    result=msg.result,
                    error=msg.error,
                    traceparent=msg.traceparent,
                    baggage=msg.baggage,
                ),
                burst=burst,
            )
        except SendFailed:
            pass  # the caller left; nobody is waiting any more


def _salvage_invocation(obj: JSON) -> tuple[str, str] | None:
    """For a broken ``invokefunction`` that still names a UUID id and a function, the pair, so
    the caller gets an error result instead of waiting for ever."""
    if not isinstance(obj, dict) or obj.get("type") != "invokefunction":
        return None
    invocation_id, function_id = obj.get("invocation_id"), obj.get("function_id")
    if not isinstance(invocation_id, str) or not isinstance(function_id, str):
        return None
    try:
        uuid.UUID(invocation_id)
    except ValueError:
        return None
    action = obj.get("action")
    if isinstance(action, dict) and action.get("type") == "void":
        return None
    return invocation_id, function_id
