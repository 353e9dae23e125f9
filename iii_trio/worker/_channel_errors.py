"""Why a channel end broke. All are ``trio.BrokenResourceError`` subclasses: the peer or the
network did it (``trio.ClosedResourceError`` is kept for "you closed it yourself")."""

from __future__ import annotations

from typing import final

import trio

from .._codes import (
    CHANNEL_EXPIRED,
    READER_CLOSED,
    READER_LOST,
    WRITER_LOST,
)


class ChannelBroken(trio.BrokenResourceError):
    """The channel ended without a clean end of stream.

    Attributes:
        code: the WebSocket close code (see the close-code table in the docs).
        reason: the reason text that came with it.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(
            f"channel closed with {code}: {reason}" if reason else f"channel closed with {code}"
        )
        self.code = code
        self.reason = reason


@final
class ChannelAborted(ChannelBroken):
    """The writer aborted the stream on purpose (``abort()``, an error or a cancellation)."""


@final
class ChannelLost(ChannelBroken):
    """The other end's connection dropped without a close: the data may be truncated."""


@final
class ChannelReaderClosed(ChannelBroken):
    """(Writer side) the reader closed its end before the end of the stream."""


@final
class ChannelExpired(ChannelBroken):
    """The other end never attached within the engine's channel TTL."""


@final
class ChannelRefused(ChannelBroken):
    """The engine refused to attach this end (HTTP ``status``: 404 unknown channel or key,
    409 end already attached, 401 missing token)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(0, reason)
        self.status = status


def channel_error(code: int, reason: str) -> ChannelBroken:
    """The most specific error for a close code other than a clean end."""
    if code in (WRITER_LOST, READER_LOST, 1006):
        return ChannelLost(code, reason)
    if code == READER_CLOSED:
        return ChannelReaderClosed(code, reason)
    if code == CHANNEL_EXPIRED:
        return ChannelExpired(code, reason)
    return ChannelAborted(code, reason)
