"""What both channel ends share: where the engine's channel sockets are
(:class:`ChannelEndpoint`), the guard against two tasks using one end at once, and the
clean-close test. See :mod:`._channels` for the theory of operation."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote, urlsplit

import attrs
import trio

from .._ws import Dialer, HandshakeError, MessageSocket, connect_message_socket
from .._ws._client import CONNECT_TIMEOUT
from .._ws._frames import NO_STATUS, NORMAL_CLOSURE
from ..protocol import StreamChannelRef
from ._channel_errors import ChannelRefused
from ._connect import channel_refusal_reason

logger = logging.getLogger("iii_trio.channels")

#: Largest frame a reader accepts.
MAX_FRAME: Final = 64 * 1024 * 1024
#: Seconds ``aclose`` may spend connecting just to deliver an end-of-stream.
CLOSE_CONNECT_TIMEOUT: Final = 10.0


@attrs.frozen
class ChannelEndpoint:
    """Where channel sockets of one engine are: its base URL and the headers to send."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    dialer: Dialer | None = None
    connect_timeout: float = CONNECT_TIMEOUT

    def url_for(self, ref: StreamChannelRef) -> str:
        parts = urlsplit(self.url)
        query = f"key={quote(ref.access_key, safe='')}&dir={ref.direction}"
        if parts.query:
            query = f"{parts.query}&{query}"
        return (
            f"{parts.scheme}://{parts.netloc}/ws/channels/{quote(ref.channel_id, safe='')}?{query}"
        )

    async def connect(self, ref: StreamChannelRef) -> MessageSocket:
        """Raises: ChannelRefused, OSError, trio.TooSlowError."""
        try:
            return await connect_message_socket(
                self.url_for(ref),
                headers=self.headers,
                max_message_size=MAX_FRAME,
                dialer=self.dialer,
                connect_timeout=self.connect_timeout,
            )
        except HandshakeError as exc:
            reason = channel_refusal_reason(exc, self.url, self.headers)
            raise ChannelRefused(exc.status, reason) from exc


class Guard:
    """Raise ``BusyResourceError`` when two tasks use one end the same way at once."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(f"another task is already {self._what}")
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


def is_clean(code: int) -> bool:
    return code in (NORMAL_CLOSURE, NO_STATUS)


def spawn(nursery: trio.Nursery, fn: Callable[..., Awaitable[object]], *args: object) -> None:
    try:
        nursery.start_soon(fn, *args)
    except RuntimeError:  # the owning nursery has closed: nobody is left to do it
        logger.debug("could not finish closing a channel end: its owner is gone")
