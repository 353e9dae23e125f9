"""Engine settings, with safe defaults."""

from __future__ import annotations

from typing import Final

import attrs

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 49134
MiB: Final = 1024 * 1024


@attrs.frozen(kw_only=True)
class EngineConfig:
    """How an engine listens and what it allows.

    Attributes:
        host: address to bind; loopback unless told otherwise.
        port: TCP port; 0 picks a free one (see :attr:`Engine.url`).
        token: if set, every WebSocket (workers and channels) must send
            ``Authorization: Bearer <token>`` (or ``?token=`` in the URL).
        max_message_size: largest control message accepted, in bytes. iii's SDKs send up to
            64 MiB, so the default leaves room above that.
        max_channel_frame: largest single data frame on a channel socket, in bytes.
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
        max_channels_per_worker: live channels one connection may create.
        handshake_timeout: seconds a client has to complete the WebSocket upgrade.
        shutdown_timeout: seconds a graceful shutdown waits for in-flight work.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_message_size: int = 80 * MiB
    max_channel_frame: int = 16 * MiB
    channel_buffer_bytes: int = 8 * MiB
    channel_memory_limit: int = 256 * MiB
    channel_ttl: float = 300.0
    invocation_timeout: float = 300.0
    max_invocation_timeout: float = 24 * 3600.0
    max_pending_invocations: int = 10_000
    max_channels_per_worker: int = 10_000
    handshake_timeout: float = 10.0
    shutdown_timeout: float = 5.0
