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


class ConnectError(IIIError):
    """Could not connect to the engine (raised by :func:`iii_trio.connect_worker` when the
    first connection fails; later ones are retried).

    Attributes:
        url: the engine URL that was dialled, with any ``token`` or ``key`` in its query
            replaced by ``***``.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


@final
class EngineUnreachable(ConnectError):
    """No engine answered at :attr:`url`: the TCP connection failed or was refused, the host
    name did not resolve, the connection was lost during the opening handshake, or no
    WebSocket upgrade came within ``connect_timeout``. The original error is the
    ``__cause__``.

    Attributes:
        url: as :class:`ConnectError`.
    """


class HandshakeRefused(ConnectError):
    """A server answered at :attr:`url`, but with an HTTP status instead of upgrading to a
    WebSocket (e.g. 404 for a wrong path, 426 for an answer that was not an upgrade; also
    101 with a wrong ``Sec-WebSocket-Accept``: not a WebSocket server).

    Attributes:
        url: as :class:`ConnectError`.
        status: the HTTP status of the answer.
        body: the body of the answer (the engine's reason, for its own refusals).
    """

    def __init__(self, message: str, *, url: str, status: int, body: str = "") -> None:
        super().__init__(message, url=url)
        self.status = status
        self.body = body


@final
class Unauthorized(HandshakeRefused):
    """The engine requires a token (HTTP 401) and either none was sent or it was wrong.

    The message says which, and where a token comes from: ``token=`` (of
    :func:`iii_trio.connect_worker`) or ``$III_TOKEN``.

    Attributes:
        url: as :class:`ConnectError`.
        status: always 401.
        body: the engine's answer.
        token_sent: whether a token was sent (``Authorization`` header or ``?token=``), i.e.
            whether it was *rejected* rather than *missing*.
    """

    def __init__(self, *, url: str, token_sent: bool, body: str = "") -> None:
        if token_sent:
            message = (
                f"token rejected by the engine at {url} (HTTP 401): "
                "check token= or $III_TOKEN against the engine's token"
            )
        else:
            message = (
                f"token missing: the engine at {url} requires one (HTTP 401); "
                "pass token= or set $III_TOKEN"
            )
        super().__init__(message, url=url, status=401, body=body)
        self.token_sent = token_sent


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
