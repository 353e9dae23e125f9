"""The record :meth:`Engine.statistics` returns."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """A snapshot of what an engine holds (:meth:`Engine.statistics`).

    Attributes:
        connections: WebSocket connections of every kind served now (``max_connections``).
        connections_refused: upgrades refused at ``max_connections`` so far.
        workers: connected workers.
        functions: registered functions.
        invocations: invocations in flight.
        channels: live channels.
        channels_finished: channels that ended so far.
        channel_buffered_bytes: bytes of channel data held now (``channel_memory_limit``).
        channel_buffered_peak: the most channel data held at once.
        outbox_bytes: bytes queued for all worker connections now.
        outbox_peak: the most one connection had queued at once (``outbox_hard_limit``).
        calls_refused: calls failed with ``worker_overloaded`` (``outbox_limit``).
        slow_consumers_dropped: connections dropped over ``outbox_hard_limit`` or
            ``outbox_max_messages``.
        unresponsive_dropped: connections dropped for not answering a ping in
            ``ping_timeout``.
    """

    workers: int
    functions: int
    invocations: int
    channels: int
    channels_finished: int
    connections: int = 0
    connections_refused: int = 0
    channel_buffered_bytes: int = 0
    channel_buffered_peak: int = 0
    outbox_bytes: int = 0
    outbox_peak: int = 0
    calls_refused: int = 0
    slow_consumers_dropped: int = 0
    unresponsive_dropped: int = 0
