"""The router: everything the engine decides about workers, functions, invocations and
triggers, as one synchronous object. No I/O, no trio.

Theory of operation
-------------------
A connection hands each decoded message to :meth:`Router.receive` and gets back what to send
and to whom: a list of ``(worker_id, item)`` pairs, where ``item`` is a wire message or a
:class:`Drop` (close that worker's connection). The engine delivers the list without waiting
on anyone (each connection's :class:`~iii_trio._ws.Outbox`), so no connection's task ever
waits for another connection: a peer that stops reading holds up only its own outbox.

The router owns the tables: connected workers, the function registry (first registration
wins, bounded per worker), the invocations in flight with their deadlines, and the trigger
table. Invocations are the one kind of message a busy worker may refuse: when the executor's
outbox is over its soft bound, the engine calls :meth:`Router.refused` and the caller gets
``worker_overloaded`` at once instead of the call waiting behind a peer that does not read.

Time comes from the ``clock`` given at construction (``trio.current_time`` in the engine, a
plain counter in tests), so every rule here is testable without ``trio.run``.

Messages a worker sends that only the engine may send, and ``registerservice``, are answered
or ignored as iii does; a message that fails to decode is answered by :meth:`bad_message`.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import final

import attrs

from .. import _codes as codes
from .._errors import RemoteProtocolError
from .._log_budget import WarningBudget
from ..protocol import (
    JSON,
    ActionEnqueue,
    ActionVoid,
    Error,
    ErrorBody,
    ForwardInvoke,
    ForwardResult,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    RawJSON,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegistrationRejected,
    RelayedInvoke,
    RelayedResult,
    UnregisterFunction,
    WorkerRegistered,
    forward_call,
    forward_result,
    materialize,
    new_uuid,
    payload_channel_ids,
    with_caller,
)
from ._bad_messages import answer_bad_message
from ._builtins import BUILTINS, BuiltinCall, BuiltinError, ChannelService
from ._config import EngineConfig
from ._invocations import Invocation, InvocationTable, Progress
from ._registrations import move_to_namespace, register_function
from ._registry import (
    DEFAULT_NAMESPACE,
    RESERVED_PREFIX,
    FunctionRegistry,
)
from ._trigger_messages import trigger_message
from ._triggers import (
    TriggerTable,
)
from ._workers import WorkerRecord

logger = logging.getLogger("iii_trio.engine")


@final
@attrs.frozen
class Drop:
    """Close the target worker's connection (it was replaced, or broke a rule)."""

    reason: str


Outgoing = tuple[str, Message | ForwardInvoke | ForwardResult | Drop]
#: A call or a result as it comes in: typed, or in the relay's light form (payloads as JSON
#: text, see ``protocol.decode_lazy``).
Call = InvokeFunction | RelayedInvoke
Result = InvocationResult | RelayedResult


@final
class Router:
    """Workers, functions, invocations and triggers: messages in, messages out.

    Args:
        config: the engine's settings (timeouts and limits are read from it).
        channels: the channel broker, for the ``engine::channels::*`` built-ins.
        clock: the current time in seconds (deadlines are on this clock).
        on_change: called after anything that waiters may care about changed.
        on_deadline: called with the deadline of each invocation added (for a timer).
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        channels: ChannelService,
        clock: Callable[[], float],
        on_change: Callable[[], None] = lambda: None,
        on_deadline: Callable[[float], None] = lambda deadline: None,
    ) -> None:
        self.config = config
        self._on_deadline = on_deadline
        self._channels = channels
        self._clock = clock
        self._on_change = on_change
        self._workers: dict[str, WorkerRecord] = {}
        self._functions = FunctionRegistry(max_per_worker=config.max_functions_per_worker)
        self._invocations = InvocationTable()
        self._triggers = TriggerTable()
        self._shutting_down = False
        #: The internal worker that calls HTTP-invoked functions, and its URL check.
        self._http_executor: str | None = None
        self._check_invocation: Callable[[JSON], str | None] | None = None
        #: A peer can send bad messages without end: their log lines are rationed.
        self._bad_message_warnings = WarningBudget(logger)

    # --- the tables (read-only views for built-ins, statistics and tests) -----------------

    @property
    def workers(self) -> Mapping[str, WorkerRecord]:
        return self._workers

    @property
    def functions(self) -> FunctionRegistry:
        return self._functions

    @property
    def invocations(self) -> InvocationTable:
        return self._invocations

    @property
    def triggers(self) -> TriggerTable:
        return self._triggers

    @property
    def channels(self) -> ChannelService:
        return self._channels

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # --- connections -----------------------------------------------------------------------

    def connect(self, peer: str) -> tuple[WorkerRecord, list[Outgoing]]:
        """A worker connected: its record, and ``workerregistered`` (its first message)."""
        record = WorkerRecord(
            worker_id=new_uuid(),
            reattach_token=new_uuid(),
            peer=peer,
            connected_at_ms=int(time.time() * 1000),
        )
        self._workers[record.worker_id] = record
        self._on_change()
        welcome = WorkerRegistered(worker_id=record.worker_id, reattach_token=record.reattach_token)
        return record, [(record.worker_id, welcome)]

    def connect_internal(self, worker_id: str, name: str) -> WorkerRecord:
        """Add a service of the engine itself that talks to the router as a worker does: it
        provides trigger types and calls functions with messages, under ``worker_id`` (a
        reserved ``engine:...`` id, never a UUID). It has no connection: the engine hands
        what the router sends it to the service. Its calls' payloads get no
        ``_caller_worker_id`` (iii adds none to HTTP-triggered calls)."""
        record = WorkerRecord(
            worker_id=worker_id,
            reattach_token="",
            peer="engine",
            connected_at_ms=int(time.time() * 1000),
            info={"name": name},
            internal=True,
        )
        self._workers[worker_id] = record
        self._on_change()
        return record

    def serve_http_functions(self, worker_id: str, check: Callable[[JSON], str | None]) -> None:
        """Calls to HTTP-invoked functions go to the internal worker ``worker_id`` (as an
        ``invokefunction`` with the function's namespace) instead of failing with
        ``function_not_invokable``. ``check(invocation)`` vets a registration's
        ``invocation`` config: a reason to refuse it, or ``None``. A refused function is not
        registered (calls get ``function_not_found``, as in iii)."""
        self._http_executor = worker_id
        self._check_invocation = check

    def disconnect(self, worker_id: str) -> list[Outgoing]:
        """A connection ended: drop its functions and bindings (telling providers), park the
        bindings it provided, fail the calls it was running. O(what it had)."""
        if self._workers.pop(worker_id, None) is None:
            return []
        for entry in self._functions.remove_worker(worker_id):
            logger.debug("function %s gone with worker %s", entry.function_id, worker_id)
        out: list[Outgoing] = list(self._triggers.remove_worker(worker_id))
        for inv in self._invocations.remove_worker(worker_id):
            if inv.executor == worker_id and inv.caller != worker_id:
                out.extend(
                    self._tell_caller(
                        inv,
                        codes.INVOCATION_STOPPED,
                        f"worker serving '{inv.function_id}' disconnected",
                    )
                )
        self._on_change()
        return out

    # --- messages from workers -------------------------------------------------------------

    def receive(
        self, worker_id: str, msg: Message | RelayedInvoke | RelayedResult
    ) -> list[Outgoing]:
        """Route one message from ``worker_id``; returns what to send."""
        record = self._workers.get(worker_id)
        if record is None:
            return []  # the connection is ending: its cleanup answered for it
        if isinstance(msg, RelayedInvoke) or isinstance(msg, InvokeFunction):  # noqa: SIM101
            out = self._invoke(record, msg)  # (the relay's form first: the common case)
        elif isinstance(msg, RelayedResult) or isinstance(msg, InvocationResult):  # noqa: SIM101
            out = self._result(record, msg)
        elif isinstance(msg, RegisterFunction):
            out = self._register(record, msg)
        elif isinstance(msg, UnregisterFunction):
            if self._functions.unregister(record.namespace, msg.id, worker_id):
                logger.info("worker %s unregistered %s", worker_id, msg.id)
            out = []
        elif isinstance(msg, Ping):
            return [(worker_id, Pong())]
        elif isinstance(msg, Reattach):
            out = self._reattach(record, msg)
        elif isinstance(msg, Pong | RegisterService):
            # Keepalive answers; services, which iii accepts and which nothing here uses.
            logger.debug("ignored %s from worker %s", type(msg).__name__, worker_id)
            return []
        elif isinstance(msg, WorkerRegistered | RegistrationRejected | Error):
            error = ErrorBody(
                code=codes.INVALID_MESSAGE,
                message=f"{type(msg).__name__} is sent by the engine, not to it",
            )
            return [(worker_id, Error(error=error))]
        else:
            out = list(trigger_message(self._triggers, record, msg))
        self._on_change()
        return out

    def bad_message(
        self, worker_id: str, raw: str | bytes, exc: RemoteProtocolError
    ) -> list[Outgoing]:
        """A message from ``worker_id`` failed to decode: the answer that says why (see
        :func:`._bad_messages.answer_bad_message`)."""
        answer = answer_bad_message(raw, exc)
        if answer is None:
            logger.debug("ignored an %s message from %s", exc.hint, worker_id)
            return []
        record = self._workers.get(worker_id)
        if record is not None:
            record.bad_messages += 1
        self._bad_message_warnings.warning("bad message from worker %s: %s", worker_id, exc)
        return [(worker_id, answer)]

    def _reattach(self, record: WorkerRecord, msg: Reattach) -> list[Outgoing]:
        """iii's session resumption: a reconnected worker names its previous connection and
        proves it with that connection's token. If that connection is still here (not yet
        noticed dead), it is evicted now, so the replayed registrations that follow find
        their names free. Otherwise nothing happens (every connection starts fresh)."""
        previous = self._workers.get(msg.previous_worker_id)
        token = msg.reattach_token or ""
        if (
            previous is None
            or previous is record
            or not hmac.compare_digest(token.encode(), previous.reattach_token.encode())
        ):
            return []
        logger.info(
            "worker %s replaces its previous connection %s", record.worker_id, previous.worker_id
        )
        out = self.disconnect(previous.worker_id)
        out.append((previous.worker_id, Drop("replaced by the same worker's new connection")))
        return out

    # --- functions -------------------------------------------------------------------------

    def _register(self, record: WorkerRecord, msg: RegisterFunction) -> list[Outgoing]:
        check = self._check_invocation
        return list(register_function(self._functions, self.config, record, msg, check))

    def move_to_namespace(self, record: WorkerRecord, namespace: str) -> None:
        """Re-home a worker's functions once it named its namespace (a conflict there loses
        the function, with a warning)."""
        move_to_namespace(self._functions, record, namespace)

    # --- invocations -----------------------------------------------------------------------

    def _invoke(self, caller: WorkerRecord, msg: Call) -> list[Outgoing]:
        function_id = msg.function_id
        if isinstance(msg.action, ActionEnqueue):
            return _error_reply(
                caller,
                msg,
                codes.ENQUEUE_ERROR,
                "iii_trio has no queue worker; enqueue is not supported",
            )
        if self._shutting_down:
            return _error_reply(caller, msg, codes.ENGINE_SHUTDOWN, "the engine is shutting down")
        if function_id.startswith(RESERVED_PREFIX) and isinstance(msg, InvokeFunction):
            # (decode_lazy gives built-in calls, whose data we read, in the typed form.)
            builtin = BUILTINS.get(function_id)
            if builtin is not None:
                return self._call_builtin(caller, msg, builtin)
        entry = self._functions.lookup(msg.namespace or DEFAULT_NAMESPACE, function_id)
        if entry is None or entry.worker_id not in self._workers:
            return _error_reply(
                caller, msg, codes.FUNCTION_NOT_FOUND, f"Function '{function_id}' not found"
            )
        executor = entry.worker_id
        if entry.http and self._http_executor is not None:
            executor = self._http_executor
        elif entry.http:
            return _error_reply(
                caller,
                msg,
                codes.FUNCTION_NOT_INVOKABLE,
                f"Function '{function_id}' is HTTP-invoked, which iii_trio does not support",
            )
        config = self.config
        invocations = self._invocations
        if invocations.pending_calls(caller.worker_id) >= config.max_pending_invocations:
            return _error_reply(
                caller,
                msg,
                codes.LIMIT_EXCEEDED,
                f"more than {config.max_pending_invocations} invocations pending on this "
                "connection",
            )
        timeout = config.invocation_timeout
        if msg.timeout_ms is not None:
            timeout = min(msg.timeout_ms / 1000, config.max_invocation_timeout)
        # The relay (no payload objects made) serves a worker's call to a worker's function.
        relay = executor == entry.worker_id and not caller.internal
        data: JSON = None
        metadata: JSON = None
        if isinstance(msg, InvokeFunction):
            data, metadata = msg.data, msg.metadata
        elif not relay:
            try:
                data, metadata = materialize(msg.data), materialize(msg.metadata)
            except RemoteProtocolError as exc:
                return _error_reply(caller, msg, codes.INVALID_MESSAGE, str(exc))
        now = self._clock()
        wants_reply = msg.invocation_id is not None and not _is_void(msg)
        target_id = invocations.new_target_id(msg.invocation_id)
        inv = Invocation(
            target_id=target_id,
            caller_id=msg.invocation_id if wants_reply else None,
            function_id=function_id,
            caller=caller.worker_id,
            executor=executor,
            deadline=now + timeout,
            started=now,
            timeout=timeout,
            channels=self._channels_of(msg.data if relay else data),
        )
        invocations.add(inv)
        self._on_deadline(inv.deadline)
        if relay and isinstance(msg, RelayedInvoke):
            return [(executor, forward_call(msg, target_id, caller.worker_id, timeout))]
        if not caller.internal:
            # Overrides any the caller sent; the engine's own callers (HTTP requests) add none.
            data = with_caller(data, caller.worker_id)
        forward = InvokeFunction(
            invocation_id=target_id,
            function_id=function_id,
            data=data,
            traceparent=msg.traceparent,
            baggage=msg.baggage,
            metadata=metadata,
            timeout_ms=int(timeout * 1000),
            namespace=entry.namespace if executor != entry.worker_id else None,
        )
        return [(executor, forward)]

    def _channels_of(self, data: JSON | RawJSON) -> tuple[Progress, ...]:
        """The live channels a payload names (the call's deadline follows their progress)."""
        found = []
        for channel_id in payload_channel_ids(data):
            channel = self._channels.progress_of(channel_id)
            if channel is not None:
                found.append(channel)
        return tuple(found)

    def _call_builtin(
        self,
        caller: WorkerRecord,
        msg: InvokeFunction,
        builtin: Callable[[BuiltinCall], JSON],
    ) -> list[Outgoing]:
        sends: list[tuple[str, Message]] = []
        call = BuiltinCall(engine=self, caller=caller, data=msg.data, out=sends)
        try:
            result = builtin(call)
        except BuiltinError as exc:
            return [*sends, *_error_reply(caller, msg, exc.code, exc.message)]
        out: list[Outgoing] = list(sends)
        if msg.invocation_id is not None and not isinstance(msg.action, ActionVoid):
            reply = InvocationResult(
                invocation_id=msg.invocation_id, function_id=msg.function_id, result=result
            )
            out.append((caller.worker_id, reply))
        return out

    def _result(self, executor: WorkerRecord, msg: Result) -> list[Outgoing]:
        inv = self._invocations.complete(msg.invocation_id, executor.worker_id)
        if inv is None:
            logger.debug(
                "ignored result for %s from %s: not an invocation it was asked to run",
                msg.invocation_id,
                executor.worker_id,
            )
            return []
        caller = self._workers.get(inv.caller)
        if inv.caller_id is None or caller is None:
            return []
        if isinstance(msg, RelayedResult):
            if not caller.internal:
                return [(inv.caller, forward_result(msg, inv.caller_id, inv.function_id))]
            # The engine's own callers (HTTP requests) work on objects.
            error = msg.error
            body = None
            if error is not None:
                body = ErrorBody(
                    code=error.code, message=error.message, stacktrace=error.stacktrace
                )
            try:
                result = materialize(msg.result)
            except RemoteProtocolError as exc:
                logger.info("result of %s refused: %s", inv.function_id, exc)
                result, body = None, ErrorBody(code=codes.INVALID_MESSAGE, message=str(exc))
            answer = InvocationResult(
                invocation_id=inv.caller_id,
                function_id=inv.function_id,
                result=result,
                error=body,
                traceparent=msg.traceparent,
                baggage=msg.baggage,
            )
            return [(inv.caller, answer)]
        answer = InvocationResult(
            invocation_id=inv.caller_id,
            function_id=inv.function_id,
            result=msg.result,
            error=msg.error,
            traceparent=msg.traceparent,
            baggage=msg.baggage,
        )
        return [(inv.caller, answer)]

    def refused(self, executor_id: str, msg: InvokeFunction | ForwardInvoke) -> list[Outgoing]:
        """The executor's outbox would not take ``msg`` (it is not reading): the call fails at
        once with ``worker_overloaded``."""
        assert msg.invocation_id is not None
        inv = self._invocations.complete(msg.invocation_id, executor_id)
        if inv is None:
            return []
        self._on_change()
        reason = (
            f"the worker serving '{inv.function_id}' is not reading its connection fast "
            "enough; the call was refused"
        )
        if inv.caller_id is None:
            logger.info("void call to %s refused: %s", inv.function_id, reason)
        return self._tell_caller(inv, codes.WORKER_OVERLOADED, reason)

    def expire(self) -> list[Outgoing]:
        """Fail the invocations whose deadline passed with ``invocation_timeout``.

        The deadline rule: a call may go ``timeout`` seconds without progress. A call whose
        payload named channels makes progress whenever any of them moves a byte, so its
        deadline moves to ``timeout`` after that channel's last frame and a long transfer is
        never cut while it flows; a call without channels must answer within ``timeout``.
        """
        now = self._clock()
        table = self._invocations
        out: list[Outgoing] = []
        expired = False
        for inv in table.due(now):
            if inv.channels:
                last = max(channel.last_progress for channel in inv.channels)
                if last + inv.timeout > now:
                    table.postpone(inv, last + inv.timeout)
                    continue
                message = (
                    f"function '{inv.function_id}' stalled: none of its channels moved a byte "
                    f"for {inv.timeout:g}s"
                )
            else:
                message = f"function '{inv.function_id}' did not answer within {inv.timeout:g}s"
            table.drop(inv)
            expired = True
            out.extend(self._tell_caller(inv, codes.INVOCATION_TIMEOUT, message))
        if expired:
            self._on_change()
        return out

    def next_deadline(self) -> float | None:
        return self._invocations.next_deadline()

    def start_shutdown(self) -> None:
        """Refuse new calls and channels from now on."""
        self._shutting_down = True
        self._on_change()

    def stop_invocations(self, reason: str) -> list[Outgoing]:
        """Fail every invocation in flight with ``invocation_stopped`` (end of a shutdown)."""
        out: list[Outgoing] = []
        for inv in self._invocations.all():
            out.extend(self._tell_caller(inv, codes.INVOCATION_STOPPED, reason))
        return out

    def _tell_caller(self, inv: Invocation, code: str, message: str) -> list[Outgoing]:
        if inv.caller_id is None or inv.caller not in self._workers:
            return []
        error = ErrorBody(code=code, message=message)
        answer = InvocationResult(
            invocation_id=inv.caller_id, function_id=inv.function_id, error=error
        )
        return [(inv.caller, answer)]


def _is_void(msg: Call) -> bool:
    if isinstance(msg, RelayedInvoke):
        return msg.void
    return isinstance(msg.action, ActionVoid)


def _error_reply(caller: WorkerRecord, msg: Call, code: str, text: str) -> list[Outgoing]:
    if msg.invocation_id is None or _is_void(msg):
        logger.info("void call to %s failed: %s: %s", msg.function_id, code, text)
        return []
    error = ErrorBody(code=code, message=text)
    reply = InvocationResult(
        invocation_id=msg.invocation_id, function_id=msg.function_id, error=error
    )
    return [(caller.worker_id, reply)]
