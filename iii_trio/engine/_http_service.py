"""The engine's ``http`` trigger type: the route table and the calls of the HTTP server, as an
internal worker of the router.

Theory of operation
-------------------
The HTTP server is a service of the engine that talks to the router exactly as a worker does,
under the reserved worker id :data:`HTTP_WORKER` (see ``Router.connect_internal``): it
registers the trigger type ``http``, so the trigger table delivers every ``http`` binding to it
(``registertrigger``) and withdraws them (``unregistertrigger``) by its ordinary rules; and it
calls functions with ``invokefunction``, whose ``invocationresult`` the engine hands back here
instead of to a connection's outbox. So the router gains no HTTP knowledge, and an HTTP
request's call gets the same deadlines (following its channels' progress), limits and error
codes as any worker's call.

:meth:`HttpTriggers.deliver` is called by the engine, synchronously, with what the router
sends the service; it never waits. A conflicting route is refused with a
``triggerregistrationresult`` error, which the trigger table forwards to the binder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, final

import attrs
import trio

from .. import _codes as codes
from ..protocol import (
    JSON,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    new_uuid,
)
from ._http_routes import RouteError, RouteTable, route_from_config

logger = logging.getLogger("iii_trio.engine")

#: The reserved worker id of the HTTP server (never a UUID, so no worker can have it).
HTTP_WORKER: Final = "engine:http"
#: The trigger type it provides.
HTTP_TRIGGER_TYPE: Final = "http"


class CallFailed(Exception):
    """A function the HTTP server called answered with an error.

    Attributes:
        code: the error's code (``invocation_failed``, ``invocation_timeout``, ...).
        message: its message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@final
@attrs.define(eq=False)
class PendingCall:
    """A call in flight: set once its answer arrives."""

    invocation_id: str
    done: trio.Event = attrs.field(factory=trio.Event)
    answer: InvocationResult | None = None

    def result(self) -> JSON:
        """The function's result.

        Raises:
            CallFailed: it answered with an error.
        """
        assert self.answer is not None
        error = self.answer.error
        if error is not None:
            raise CallFailed(error.code, error.message)
        return self.answer.result


@final
class HttpTriggers:
    """The routes bound with the ``http`` trigger type, and the calls made for requests.

    Args:
        submit: hands a message from :data:`HTTP_WORKER` to the router (and delivers what it
            answers); never waits.
    """

    def __init__(self, submit: Callable[[Message], None]) -> None:
        self.routes = RouteTable()
        self._submit = submit
        self._pending: dict[str, PendingCall] = {}

    def start(self) -> None:
        """Provide the ``http`` trigger type (bindings made before are delivered now)."""
        self._submit(
            RegisterTriggerType(
                id=HTTP_TRIGGER_TYPE,
                description="HTTP routes served by the engine (api_path, http_method)",
            )
        )

    def deliver(self, msg: Message) -> None:
        """What the router sent :data:`HTTP_WORKER`. Never waits."""
        if isinstance(msg, InvocationResult):
            pending = self._pending.pop(msg.invocation_id, None)
            if pending is not None:
                pending.answer = msg
                pending.done.set()
        elif isinstance(msg, RegisterTrigger):
            self._bind(msg)
        elif isinstance(msg, UnregisterTrigger):
            route = self.routes.remove(msg.id)
            if route is not None:
                logger.info("http route %s (%s) removed", route.key, route.function_id)
        else:
            logger.debug("the HTTP server ignored a %s", type(msg).__name__)

    def _bind(self, msg: RegisterTrigger) -> None:
        try:
            route = route_from_config(msg.id, msg.function_id, msg.config, msg.metadata)
            self.routes.add(route)
        except RouteError as exc:
            logger.error("http trigger %s for %s refused: %s", msg.id, msg.function_id, exc)
            error = ErrorBody(code=codes.TRIGGER_REGISTRATION_FAILED, message=str(exc))
            self._submit(
                TriggerRegistrationResult(
                    id=msg.id,
                    trigger_type=msg.trigger_type,
                    function_id=msg.function_id,
                    error=error,
                )
            )
            return
        logger.info("http route %s -> %s", route.key, route.function_id)
        self._submit(
            TriggerRegistrationResult(
                id=msg.id, trigger_type=msg.trigger_type, function_id=msg.function_id
            )
        )

    def call(
        self, function_id: str, data: JSON, *, timeout: float, metadata: JSON = None
    ) -> PendingCall:
        """Start a call to ``function_id``; wait on ``pending.done``, then read
        ``pending.result()``. The call's deadline is ``timeout`` seconds without progress
        (its channels', when ``data`` names some)."""
        pending = PendingCall(new_uuid())
        self._pending[pending.invocation_id] = pending
        self._submit(
            InvokeFunction(
                invocation_id=pending.invocation_id,
                function_id=function_id,
                data=data,
                metadata=metadata,
                timeout_ms=max(int(timeout * 1000), 1),
            )
        )
        return pending

    def forget(self, pending: PendingCall) -> None:
        """Nobody waits for this call any more (its answer, if it comes, is dropped)."""
        self._pending.pop(pending.invocation_id, None)

    async def run_call(self, function_id: str, data: JSON, *, timeout: float) -> JSON:
        """Call ``function_id`` and wait for its result.

        Raises:
            CallFailed: the function (or the engine for it) answered with an error.
        """
        pending = self.call(function_id, data, timeout=timeout)
        try:
            await pending.done.wait()
        finally:
            self.forget(pending)
        return pending.result()
