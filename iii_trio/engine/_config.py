"""Engine settings, with safe defaults."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import attrs

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 49134
#: iii's HTTP port, which ``iii-trio engine`` serves HTTP triggers on unless told otherwise.
DEFAULT_HTTP_PORT: Final = 3111
MiB: Final = 1024 * 1024


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also refuses NaN
        raise ValueError(f"EngineConfig.{attribute.name} must be > 0, got {value!r}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _port_or_none(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError(f"EngineConfig.{attribute.name} must be in [0, 65535], got {value!r}")


def _in_range(low: float, high: float) -> Callable[[object, attrs.Attribute[Any], float], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if not low <= value <= high:
            raise ValueError(
                f"EngineConfig.{attribute.name} must be in [{low:g}, {high:g}], got {value!r}"
            )

    return check


@attrs.frozen(kw_only=True)
class EngineConfig:
    """How an engine listens and what it allows.

    Raises:
        ValueError: a size, limit or timeout that is not positive, or a port out of range.

    Attributes:
        host: address to bind; loopback unless told otherwise.
        port: TCP port; 0 picks a free one (see :attr:`Engine.url`).
        token: if set, every WebSocket (workers and channels) must send
            ``Authorization: Bearer <token>`` (or ``?token=`` in the URL).
        max_message_size: largest control message accepted, in bytes. iii's SDKs send up to
            64 MiB, so the default leaves room above that.
        max_channel_frame: largest single data frame on a channel socket, in bytes.
        max_message_frames: most WebSocket frames one fragmented message may span (control
            frames between its fragments count too); past it the connection is closed with
            1008. iii's SDKs fragment only above 16 MiB, into 1 MiB frames.
        channel_buffer_bytes: bytes a channel buffers between writer and reader before the
            engine stops reading the writer (backpressure).
        channel_memory_limit: bytes all channels together may buffer. Past it, a writer whose
            channel already holds data waits until readers drain; a channel with an empty
            buffer may always take one more frame, so every stream keeps moving. Engine memory
            for channel data stays under this plus one frame per live channel.
        channel_ttl: seconds an end of a channel may stay unattached before the channel
            expires.
        invocation_timeout: seconds an invocation may run when the caller set no deadline.
        max_invocation_timeout: upper bound for a caller's own deadline, in seconds.
        max_pending_invocations: invocations one connection may have waiting at once.
        max_connections: WebSocket connections of every kind (workers, channel ends,
            telemetry) the engine serves at once; past it an upgrade is answered with HTTP 503.
        max_channels: live channels in the whole engine (attached or not); past it
            ``engine::channels::create`` answers ``limit_exceeded``.
        max_function_info: bytes of JSON one function's ``metadata``, ``description`` and
            formats may take together; a larger registration is refused
            (``registrationrejected``, code ``limit_exceeded``), so listings stay small.
        max_list_answer: bytes of rows one ``engine::functions::list`` answer carries at most;
            a longer listing is cut there, with ``"next"`` naming where to go on (pass it as
            ``after``).
        max_functions_per_worker: functions one connection may register; past it a
            registration is refused (``registrationrejected``, code ``limit_exceeded``).
        max_channels_per_worker: live channels one connection may create.
        outbox_limit: bytes queued for one connection (in memory, after the kernel's socket
            buffer is full) past which new calls routed to it are refused at once: their
            callers get ``worker_overloaded`` instead of waiting behind a worker that does
            not read.
        outbox_hard_limit: bytes queued for one connection past which it is closed as a slow
            consumer: it does not read the answers and deliveries it must get. At least
            ``outbox_limit``; an empty outbox always takes one message of any size.
        outbox_max_messages: messages queued for one connection past which it is closed as a
            slow consumer (so floods of tiny answers are bounded too).
        ping_interval: seconds between keepalive pings to each worker connection (``None``:
            never ping). A worker must answer within ``ping_timeout`` or it is dropped (and
            the calls it was running fail with ``invocation_stopped``).
        ping_timeout: seconds a worker may take to answer a keepalive ping.
        handshake_timeout: seconds a client has to complete the WebSocket upgrade.
        shutdown_timeout: seconds a graceful shutdown waits for in-flight work.
        http_host: address the HTTP server (``http`` triggers) binds.
        http_port: TCP port of the HTTP server; ``None``: no HTTP server (the default when
            embedding; ``iii-trio engine`` serves on 3111 unless ``--no-http``); 0 picks a
            free one (see :attr:`Engine.http_url`).
        http_request_timeout: seconds a routed request may go without progress before it
            is answered 504: until the response head is decided, and while its body or
            response streams (the call's deadline follows its channels).
        http_head_timeout: seconds a client has to send a whole request head (slowloris).
        http_idle_timeout: seconds a kept-alive HTTP connection may wait for its next
            request.
        http_max_body_size: largest request body, in bytes; a longer one is answered 413
            (iii's standalone HTTP worker allows 16 MiB).
        http_max_requests: requests served at once; more wait for a turn (iii's
            concurrency_request_limit).
        http_max_connections: HTTP connections open at once; more wait in the listen
            backlog.
        http_cors: answer CORS preflights and allow any origin, as iii does when no
            ``cors`` is configured.
        http_functions: call the URL of HTTP-invoked functions (iii's
            ``iii-http-functions``); off: calls to them fail with ``function_not_invokable``.
        http_functions_allow_http: let HTTP-invoked functions use ``http://`` URLs (iii
            requires https).
        http_functions_allow_private: let HTTP-invoked functions reach loopback, private,
            link-local and other non-public addresses (iii blocks them).
        http_functions_timeout: seconds an HTTP-invoked function may take when its config
            names no ``timeout_ms``.
    """

    host: str = DEFAULT_HOST
    port: int = attrs.field(default=DEFAULT_PORT, validator=_in_range(0, 65535))
    token: str | None = None
    max_message_size: int = attrs.field(default=80 * MiB, validator=_positive)
    max_channel_frame: int = attrs.field(default=16 * MiB, validator=_positive)
    max_message_frames: int = attrs.field(default=4096, validator=_positive)
    channel_buffer_bytes: int = attrs.field(default=8 * MiB, validator=_positive)
    channel_memory_limit: int = attrs.field(default=256 * MiB, validator=_positive)
    channel_ttl: float = attrs.field(default=300.0, validator=_positive)
    invocation_timeout: float = attrs.field(default=300.0, validator=_positive)
    max_invocation_timeout: float = attrs.field(default=24 * 3600.0, validator=_positive)
    max_pending_invocations: int = attrs.field(default=10_000, validator=_positive)
    max_connections: int = attrs.field(default=10_000, validator=_positive)
    max_channels: int = attrs.field(default=20_000, validator=_positive)
    max_function_info: int = attrs.field(default=1 * MiB, validator=_positive)
    max_list_answer: int = attrs.field(default=16 * MiB, validator=_positive)
    max_functions_per_worker: int = attrs.field(default=10_000, validator=_positive)
    max_channels_per_worker: int = attrs.field(default=10_000, validator=_positive)
    outbox_limit: int = attrs.field(default=16 * MiB, validator=_positive)
    outbox_hard_limit: int = attrs.field(default=96 * MiB, validator=_positive)
    outbox_max_messages: int = attrs.field(default=20_000, validator=_positive)
    ping_interval: float | None = attrs.field(default=20.0, validator=_positive_or_none)
    ping_timeout: float = attrs.field(default=20.0, validator=_positive)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    shutdown_timeout: float = attrs.field(default=5.0, validator=_in_range(0, math.inf))
    http_host: str = DEFAULT_HOST
    http_port: int | None = attrs.field(default=None, validator=_port_or_none)
    http_request_timeout: float = attrs.field(default=30.0, validator=_positive)
    http_head_timeout: float = attrs.field(default=10.0, validator=_positive)
    http_idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    http_max_body_size: int = attrs.field(default=16 * MiB, validator=_positive)
    http_max_requests: int = attrs.field(default=1024, validator=_positive)
    http_max_connections: int = attrs.field(default=4096, validator=_positive)
    http_cors: bool = True
    http_functions: bool = False
    http_functions_allow_http: bool = False
    http_functions_allow_private: bool = False
    http_functions_timeout: float = attrs.field(default=30.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.outbox_hard_limit < self.outbox_limit:
            raise ValueError(
                "EngineConfig.outbox_hard_limit must be >= outbox_limit, got "
                f"{self.outbox_hard_limit!r} < {self.outbox_limit!r}"
            )
