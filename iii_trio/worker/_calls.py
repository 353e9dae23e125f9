"""Calls this worker waits for: the pending-call table, what a call's arguments mean, and
the deadline rule.

Each ``trigger`` that wants an answer registers a :class:`PendingCall` under its invocation id
and waits on it; the session's reader completes it (:meth:`PendingCalls.deliver`). When a
connection ends, every call sent on it fails at once with ``WorkerDisconnected``
(:meth:`PendingCalls.fail_session`): its answer can never arrive.

The deadline rule (the engine's too, see ``iii_trio.engine._router``): a call may go
``timeout`` seconds without progress. A call that streams through channels makes progress
whenever one of them moves data, so it is never cut off while its bytes flow
(:func:`follow_progress`); a call without channels must answer within ``timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, final

import attrs
import trio

from .. import _codes as codes
from .._errors import (
    IIIError,
    InvocationTimeout,
    RemoteProtocolError,
    WorkerDisconnected,
    invocation_error,
)
from ..protocol import (
    JSON,
    Action,
    ActionEnqueue,
    ActionVoid,
    InvocationResult,
    RelayedResult,
    parse_raw,
)


@attrs.define(eq=False)
class PendingCall:
    """One call waiting for its answer, on the connection it was sent on.

    The calling task parks on it directly (one per call, so no ``trio.Event`` and its
    parking lot are needed): :meth:`wait` until :meth:`set`.
    """

    session: object
    result: JSON = None
    error: IIIError | None = None
    #: The outcome is in (``set`` was called).
    done: bool = False
    _task: trio.lowlevel.Task | None = attrs.field(default=None, init=False)

    async def wait(self) -> None:
        """Wait until :meth:`set` (a checkpoint even if it was set already)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def set(self) -> None:
        """The outcome is in: wake the caller."""
        self.done = True
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def outcome(self) -> JSON:
        """The result, once it is :attr:`done`.

        Raises:
            IIIError: the call failed (the most specific ``InvocationError`` subclass).
        """
        if self.error is not None:
            raise self.error
        return self.result


@final
class PendingCalls:
    """The calls waiting for an answer, by invocation id."""

    def __init__(self) -> None:
        self._calls: dict[str, PendingCall] = {}

    def add(self, invocation_id: str, session: object) -> PendingCall:
        call = PendingCall(session)
        self._calls[invocation_id] = call
        return call

    def discard(self, invocation_id: str) -> None:
        self._calls.pop(invocation_id, None)

    def deliver(self, msg: InvocationResult | RelayedResult) -> None:
        """An answer arrived (ignored if nobody waits for it any more)."""
        call = self._calls.get(msg.invocation_id)
        if call is None:
            return  # timed out or cancelled on our side already
        if msg.error is not None:
            call.error = invocation_error(
                msg.error.code,
                msg.error.message,
                stacktrace=msg.error.stacktrace,
                function_id=msg.function_id,
            )
        elif isinstance(msg, RelayedResult):
            try:
                call.result = parse_raw(msg.result)
            except RemoteProtocolError as exc:  # pragma: no cover - relay_form checked it
                call.error = exc
        else:
            call.result = msg.result
        call.set()

    def fail_session(self, session: object) -> None:
        """The connection ``session`` ended: its calls fail with ``WorkerDisconnected``."""
        for call in self._calls.values():
            if call.session is session and not call.done:
                call.error = WorkerDisconnected(
                    codes.WORKER_DISCONNECTED,
                    "the connection to the engine was lost before the result arrived",
                )
                call.set()

    def __len__(self) -> int:
        return len(self._calls)


def to_action(action: Action | str | Mapping[str, Any] | None) -> Action | None:
    """The wire action for the forms ``trigger`` accepts.

    Raises:
        ValueError: an action this engine does not know.
    """
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
        return to_action(action.model_dump())
    raise ValueError(f"unknown action {action!r}; use 'void' or {{'type': 'void'}}")


class timeout_as_error:
    """``fail_after`` that raises :class:`InvocationTimeout` instead of ``TooSlowError``
    (with no deadline at all for an infinite ``seconds``: entering a cancel scope costs a
    call more than all the rest of its bookkeeping)."""

    def __init__(self, seconds: float, function_id: str) -> None:
        self._scope = _NO_SCOPE if seconds == math.inf else trio.move_on_after(seconds)
        self._seconds = seconds
        self._function_id = function_id

    @property
    def scope(self) -> trio.CancelScope:
        return self._scope

    def __enter__(self) -> trio.CancelScope:
        if self._scope is _NO_SCOPE:
            return self._scope
        return self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        if self._scope is _NO_SCOPE:
            return False
        suppressed = self._scope.__exit__(*exc_info)
        if self._scope.cancelled_caught:
            raise InvocationTimeout(
                codes.INVOCATION_TIMEOUT,
                f"no answer from '{self._function_id}' within {self._seconds}s",
                function_id=self._function_id,
            )
        return bool(suppressed)


#: Stands for the scope of an infinite timeout: never entered, never cancelled.
_NO_SCOPE: Final = trio.CancelScope()


class Progress(Protocol):
    """A channel end: when it last moved data."""

    @property
    def last_progress(self) -> float: ...


async def follow_progress(
    scope: trio.CancelScope, timeout: float, ends: Sequence[Progress], *, since: float
) -> None:
    """Cancel ``scope`` once ``timeout`` seconds pass with no progress on any of ``ends``
    (counting from ``since`` and from each end's last progress). Returns after cancelling;
    run it in a task that ``scope`` covers, or cancel it when the work is done."""
    deadline = since + timeout
    while True:
        await trio.sleep_until(deadline)
        last = max([since, *(end.last_progress for end in ends)])
        if last + timeout <= trio.current_time():
            scope.cancel()
            return
        deadline = last + timeout


def stalled(function_id: str, timeout: float) -> InvocationTimeout:
    """The error for a streaming call whose channels stopped moving."""
    return InvocationTimeout(
        codes.INVOCATION_TIMEOUT,
        f"'{function_id}' stalled: its channels moved no data for {timeout:g}s",
        function_id=function_id,
    )
