"""The iii_trio error tree: what users catch. The wire codes they carry are in
:mod:`iii_trio._codes`.

No trio import here: the sans-IO protocol layer raises these too. Stream failures on channel
ends use trio's own resource errors (see :mod:`iii_trio.worker._channel_errors`).
"""

from __future__ import annotations

from typing import Final, final

from ._codes import (
    FUNCTION_NOT_FOUND,
    INVALID_MESSAGE,
    INVOCATION_FAILED,
    INVOCATION_STOPPED,
    INVOCATION_TIMEOUT,
    WORKER_DISCONNECTED,
    WORKER_OVERLOADED,
)


class IIIError(Exception):
    """Base class of every iii_trio error."""


class ProtocolError(IIIError):
    """A message broke the iii protocol.

    Attributes:
        hint: the wire error code a peer should be told (e.g. ``invalid_message``).
    """

    def __init__(self, message: str, *, hint: str = INVALID_MESSAGE) -> None:
        super().__init__(message)
        self.hint = hint


@final
class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow (a bug in the caller)."""


@final
class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class InvocationError(IIIError):
    """An invocation ended with an error.

    Attributes:
        code: the wire error code (``function_not_found``, ``invocation_failed``, ...).
        message: the human-readable message from the wire.
        stacktrace: the remote stack trace, if the executor sent one.
        function_id: the function that was called.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        stacktrace: str | None = None,
        function_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stacktrace = stacktrace
        self.function_id = function_id


@final
class FunctionNotFound(InvocationError):
    """No worker has registered the function (``function_not_found``)."""


@final
class InvocationFailed(InvocationError):
    """The function's handler raised (``invocation_failed``)."""


@final
class InvocationTimeout(InvocationError):
    """The invocation did not finish before its deadline (``invocation_timeout``)."""


@final
class InvocationStopped(InvocationError):
    """The executing worker went away before answering (``invocation_stopped``)."""


@final
class WorkerOverloaded(InvocationError):
    """The worker serving the function does not read its connection fast enough, so the
    engine refused the call at once (``worker_overloaded``) instead of queueing it."""


@final
class WorkerDisconnected(InvocationError):
    """Our own connection to the engine was lost while the call was in flight."""


@final
class RegistrationRejected(IIIError):
    """The engine refused a registration (e.g. ``FUNCTION_NAMESPACE_CONFLICT``)."""

    def __init__(self, code: str, message: str, *, function_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.function_id = function_id


_BY_CODE: Final[dict[str, type[InvocationError]]] = {
    FUNCTION_NOT_FOUND: FunctionNotFound,
    INVOCATION_FAILED: InvocationFailed,
    INVOCATION_TIMEOUT: InvocationTimeout,
    INVOCATION_STOPPED: InvocationStopped,
    WORKER_DISCONNECTED: WorkerDisconnected,
    WORKER_OVERLOADED: WorkerOverloaded,
}


def invocation_error(
    code: str, message: str, *, stacktrace: str | None = None, function_id: str | None = None
) -> InvocationError:
    """Build the most specific :class:`InvocationError` subclass for a wire code."""
    cls = _BY_CODE.get(code, InvocationError)
    return cls(code, message, stacktrace=stacktrace, function_id=function_id)
