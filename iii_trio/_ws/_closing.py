"""The close state both message sockets share (:class:`WebSocket` over a byte stream,
:class:`MemoryWebSocket` in process): one receiver at a time, the close handshake's states,
and who closed first.

Errors: :class:`ConnectionClosed` (a subclass of ``trio.BrokenResourceError``) when the peer
closed or the connection broke; ``trio.ClosedResourceError`` when *we* closed it first.
"""

from __future__ import annotations

import abc
import enum
from typing import Final

import trio

#: How long ``close`` waits for the peer's Close before dropping the connection.
CLOSE_TIMEOUT: Final = 5.0  # seconds


class ConnectionClosed(trio.BrokenResourceError):
    """The peer closed the WebSocket, or the connection broke.

    Attributes:
        code: the peer's close code; 1005 if its Close had none, 1006 if there was no Close.
        reason: the peer's close reason (may be empty).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"WebSocket closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class State(enum.Enum):
    OPEN = "open"
    CLOSE_SENT = "close sent"  # we started the close handshake
    CLOSED = "closed"


class ClosingSocket(abc.ABC):
    """The receive and close bookkeeping of a message socket. Subclasses provide
    ``_receive`` (the next message, driving the close handshake) and ``close``."""

    def __init__(self) -> None:
        self._state = State.OPEN
        self._receiving = False
        self._draining = False  # close() is reading the peer's last frames itself
        self._closed_event = trio.Event()
        #: (code, reason) once the connection is closed, from whichever side.
        self.close_info: tuple[int, str] | None = None
        self._closed_locally = False
        self.bytes_received = 0

    @abc.abstractmethod
    async def _receive(self) -> str | bytes:
        """The next data message; raises ConnectionClosed at the end."""

    @abc.abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or finish) the close handshake; closes even when cancelled."""

    async def receive(self) -> str | bytes:
        """The next data message: ``str`` for text, ``bytes`` for binary.

        Raises:
            ConnectionClosed: the peer closed (also after a completed close handshake that we
                started while this call waited) or the connection broke.
            trio.ClosedResourceError: we closed the connection before this call.
            trio.BusyResourceError: another task is already receiving.
        """
        if self._receiving:
            if not self._draining:
                raise trio.BusyResourceError("another task is already receiving")
            # close() is reading the peer's last frames itself: wait for it to finish, then
            # report the closed connection like any other receiver would see it.
            await self._closed_event.wait()
        if self.close_info is not None:
            await trio.lowlevel.checkpoint()
            self._raise_closed()
        self._receiving = True
        try:
            return await self._receive()
        finally:
            self._receiving = False

    async def _await_peer_close(self) -> None:
        """After our Close: wait (at most :data:`CLOSE_TIMEOUT`) for the peer's, reading and
        dropping what comes before it unless another task is receiving anyway."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            if self._receiving:
                await self._closed_event.wait()
                return
            self._receiving = True
            self._draining = True
            try:
                while self._state is not State.CLOSED:
                    try:
                        await self._receive()
                    except trio.BrokenResourceError:
                        return
            finally:
                self._receiving = False
                self._draining = False

    def _finish(self, code: int, reason: str) -> None:
        self._state = State.CLOSED
        if self.close_info is None:
            self.close_info = (code, reason)
        self._closed_event.set()

    def _raise_closed(self) -> None:
        if self.close_info is not None and not self._closed_locally:
            raise ConnectionClosed(*self.close_info)
        raise trio.ClosedResourceError("WebSocket is closing or closed")

    async def aclose(self) -> None:
        """Same as ``close(1000)``."""
        await self.close()

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        await self._closed_event.wait()
