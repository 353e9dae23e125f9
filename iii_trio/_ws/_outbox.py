"""The one outbox: messages waiting to be written to a message socket, bounded in bytes and in
count. The engine's worker connections and the SDK's session each write through one.

Theory of operation
-------------------
One writer task (:meth:`Outbox.run`, started in the nursery of the connection that owns the
outbox) takes whatever is queued and writes it with one :meth:`MessageSocket.send_many`, so a
burst of messages leaves in one system call. Nothing else ever waits on the socket: a task that
has a message for this connection hands it over without waiting (:meth:`Outbox.post`,
:meth:`Outbox.offer`), or waits for room under the bound in *this* outbox only
(:meth:`Outbox.send`, for a connection's own user). No task per message is ever started.

When the writer is idle (nothing queued, nothing in hand) and the message does not start a
burst, the posting task writes it itself with one non-blocking system call and no schedule point
(``MessageSocket.send_many_nowait``): a message then costs no task switch at all, where the
hand-off to the writer costs two. Order is kept: the direct path is taken only when nothing sent
earlier can still be waiting, and bytes the socket did not take (its *tail*) go out before
anything queued later, because the writer is woken to write them. With ``coalesce=True`` a direct
write also wakes the writer, so that messages posted until it has run are queued and leave
together (a client with many calls in flight shares writes instead of one system call each).

Bounds. Every queued message counts its size in memory (``sys.getsizeof``) from the moment it
is queued until its write completed, so a batch in the kernel's hands still counts. An empty
outbox always takes one message, however large, so no message is refused for its size alone.
Two levels, and what a full outbox means is the caller's policy (the engine's is in
docs/security.md):

* ``limit`` (soft): :meth:`offer` refuses past it and :meth:`send` waits for room under it.
  The engine offers new *work* (an invocation) this way and fails the call at once when the
  executor's outbox is over it.
* ``hard_limit`` and ``max_messages``: :meth:`post` refuses past them. The engine posts what a
  connection *must* get (answers to its calls, trigger deliveries) this way and closes a
  connection whose outbox is over them as a slow consumer. ``None`` means unbounded (the SDK
  posts only its own registrations, which its user makes).

Closing: :meth:`close` takes no more messages (``post``/``offer`` then drop them and return
True: the connection is going away and its cleanup answers for what it had) and lets the writer
deliver what is queued, then :meth:`run` returns. :meth:`flush` writes everything queued from the
calling task (a goodbye when the writer no longer runs).
"""

from __future__ import annotations

import collections
import sys
from typing import Final, final

import attrs
import trio

from ._socket import MessageSocket

#: Messages written per socket write at most.
_BATCH: Final = 256


@attrs.frozen(kw_only=True)
class OutboxStatistics:
    """What an outbox holds (:meth:`Outbox.statistics`)."""

    #: Bytes and messages queued or being written now, and the most bytes held at once.
    queued_bytes: int
    queued_messages: int
    peak_bytes: int


@final
class Outbox:
    """Messages for one socket, written by one writer task (see the module docstring).

    Args:
        ws: the socket to write to.
        limit: the soft bound in bytes (``offer`` and ``send``).
        hard_limit: the hard bound in bytes (``post``); ``None``: unbounded.
        max_messages: the most messages queued (``post`` and ``offer``); ``None``: unbounded.
        coalesce: a direct write wakes the writer, so later messages share a write.

    Raises:
        ValueError: a bound that is not positive, or ``hard_limit`` below ``limit``.
    """

    def __init__(
        self,
        ws: MessageSocket,
        *,
        limit: int,
        hard_limit: int | None = None,
        max_messages: int | None = None,
        coalesce: bool = False,
    ) -> None:
        if limit < 1 or (max_messages is not None and max_messages < 1):
            raise ValueError("outbox bounds must be positive")
        if hard_limit is not None and hard_limit < limit:
            raise ValueError("the hard limit of an outbox must not be below its soft limit")
        self._ws = ws
        self._limit = limit
        self._hard_limit = sys.maxsize if hard_limit is None else hard_limit
        self._max_messages = sys.maxsize if max_messages is None else max_messages
        self._coalesce = coalesce
        self._queue: collections.deque[str] = collections.deque()
        #: Bytes and messages queued or in the batch being written.
        self._bytes = 0
        self._count = 0
        self._peak = 0
        #: True while the writer waits with nothing queued and nothing in hand.
        self._idle = False
        self._closed = False
        self._broken = False
        self._wakeup = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()

    # --- handing messages over ------------------------------------------------------------

    def post(self, text: str, *, burst: bool = False) -> bool:
        """Queue (or write at once) a message the peer must get; never waits.

        ``burst=True``: more messages follow at once, so queue it for a shared write.
        Returns False, having queued nothing, only if the outbox is over its hard bounds.
        """
        return self._put(text, burst, self._hard_limit)

    def offer(self, text: str, *, burst: bool = False) -> bool:
        """Like :meth:`post`, but refused past the soft ``limit`` too (optional work)."""
        return self._put(text, burst, self._limit)

    def send_nowait(self, text: str, *, burst: bool = False) -> bool:
        """:meth:`send` when it need not wait: queue (or write) ``text`` if the outbox is open
        and under its soft ``limit``; False, having done nothing, otherwise (then
        :meth:`send` waits for room, or raises). ``burst`` as for :meth:`post`."""
        if self._closed or self._broken:
            return False
        return self._put(text, burst, self._limit)

    async def send(self, text: str) -> None:
        """Queue a message, waiting while the outbox is over its soft ``limit``. Not a schedule
        point when there is room (messages sent in one scheduler pass share a write).

        Raises:
            trio.ClosedResourceError: the outbox was closed.
            trio.BrokenResourceError: the socket failed.
        """
        if self._closed or self._broken:
            await trio.lowlevel.checkpoint()
            self._raise_closed()
        if self._put(text, False, self._limit):
            return
        size = sys.getsizeof(text)
        while self._count and self._bytes + size > self._limit:
            await self._room.park()
            if self._closed or self._broken:
                self._raise_closed()
        self._queue_message(text, size)

    def _put(self, text: str, burst: bool, byte_limit: int) -> bool:
        if self._closed or self._broken:
            return True  # the connection is going away; its cleanup answers for it
        if not burst and self._idle and self._write_now(text):
            return True
        size = sys.getsizeof(text)
        if self._count and (self._bytes + size > byte_limit or self._count >= self._max_messages):
            return False
        self._queue_message(text, size)
        return True

    def _queue_message(self, text: str, size: int) -> None:
        self._queue.append(text)
        self._count += 1
        self._bytes += size
        if self._bytes > self._peak:
            self._peak = self._bytes
        if self._idle:
            self._wake_writer()

    def _write_now(self, text: str) -> bool:
        """Write ``text`` from the calling task (the writer is idle); False if the socket
        would not take it at once."""
        ws = self._ws
        if not ws.send_many_nowait((text,)):
            return False
        if self._coalesce or ws.tail_pending:
            self._wake_writer()  # it writes the tail first, or collects the next messages
        return True

    def _wake_writer(self) -> None:
        self._idle = False
        self._wakeup.unpark_all()

    # --- the writer ----------------------------------------------------------------------

    async def run(self) -> None:
        """Write queued messages until :meth:`close` (then what is queued goes out first) or
        until the socket fails. Run it in the nursery of the connection that owns the outbox.
        """
        ws = self._ws
        queue = self._queue
        try:
            while True:
                if not queue and not ws.tail_pending:
                    if self._closed:
                        return
                    self._idle = True
                    try:
                        await self._wakeup.park()
                    finally:
                        self._idle = False
                    continue
                batch = [queue.popleft() for _ in range(min(len(queue), _BATCH))]
                try:
                    await ws.send_many(batch)  # writes the tail of a direct write first
                finally:
                    self._written(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._broken = True
            self._room.unpark_all()

    def _written(self, batch: list[str]) -> None:
        if batch:
            self._count -= len(batch)
            self._bytes -= sum(map(sys.getsizeof, batch))
            if self._room:
                self._room.unpark_all()

    async def flush(self) -> None:
        """Write everything queued (and a pending tail) from the calling task; for a goodbye
        after the writer stopped. Socket errors end it quietly (the peer is gone)."""
        batch = list(self._queue)
        self._queue.clear()
        try:
            await self._ws.send_many(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._broken = True
        finally:
            self._written(batch)

    def close(self) -> None:
        """Take no more messages; the writer delivers what is queued, then :meth:`run`
        returns. Tasks waiting in :meth:`send` get ``trio.ClosedResourceError``."""
        self._closed = True
        self._wake_writer()
        self._room.unpark_all()

    def _raise_closed(self) -> None:
        if self._broken and not self._closed:
            raise trio.BrokenResourceError("the connection is broken")
        raise trio.ClosedResourceError("the outbox is closed")

    # --- introspection -------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def over_limit(self) -> bool:
        """More than the soft ``limit`` is queued."""
        return self._bytes > self._limit

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            queued_bytes=self._bytes, queued_messages=self._count, peak_bytes=self._peak
        )
