"""What the engine and the SDK need of a message socket: implemented by :class:`WebSocket`
(RFC 6455 over a byte stream) and :class:`MemoryWebSocket` (messages passed by reference
between two tasks of one process)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class MessageSocket(Protocol):
    """A message-oriented connection with WebSocket close semantics.

    Errors follow :class:`WebSocket`: ``ConnectionClosed`` when the peer closed or the
    connection broke, ``trio.ClosedResourceError`` when we closed it first.
    """

    #: The largest message the peer accepts when this socket knows it (``None``: unknown).
    #: A writer of bulk data may send messages this large instead of splitting them.
    max_send_size: int | None
    #: True for a socket to a task of this process: a non-blocking send costs no system call.
    in_process: bool
    close_info: tuple[int, str] | None

    async def receive(self) -> str | bytes: ...

    def receive_nowait(self) -> str | bytes | None: ...

    async def send(self, message: str | bytes | memoryview) -> None: ...

    async def send_many(self, messages: Iterable[str | bytes | memoryview]) -> None: ...

    def send_many_nowait(self, messages: Iterable[str | bytes | memoryview]) -> bool: ...

    async def flush(self) -> None: ...

    @property
    def tail_pending(self) -> bool: ...

    @property
    def receive_buffered(self) -> bool: ...

    def trim_receive_buffer(self) -> None: ...

    async def wait_writable(self) -> None: ...

    async def close(self, code: int = ..., reason: str = ...) -> None: ...

    async def abort(self) -> None: ...

    async def aclose(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    async def wait_closed(self) -> None: ...
