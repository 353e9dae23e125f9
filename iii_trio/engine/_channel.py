"""One brokered channel's state, and the byte budget all channels share. Synchronous, no I/O
(the broker in :mod:`._broker` moves the frames and wakes its tasks through ``wake``).

Theory of operation
-------------------
Each end of a channel is a small state machine (:class:`EndState`, transitions in
:data:`END_TRANSITIONS`): an end is ``UNATTACHED`` until its socket attaches, ``ATTACHED``
while the broker serves it, ``FINISHED`` once that is done, or ``EXPIRED`` if it never attached
within the TTL. How the stream ended is recorded apart: ``writer_end`` (a clean EOF or the
writer's abort code) and ``reader_end`` (the reader left before the end, or expired). The
channel's :attr:`ChannelState.phase` is derived from these: ``waiting`` (an end is not attached),
``streaming``, ``draining`` (the writer is done, buffered frames still go out), ``done``.

Memory. A channel *holds* the frames buffered for its reader plus the batch its reader's pump
is writing (``in_flight``): both are engine memory until written. A channel takes another frame
only while it holds less than ``max_bytes`` (and ``max_items`` frames); all channels together
share one :class:`BufferBudget` (``channel_memory_limit``): once the budget is spent, only a
channel that holds nothing may take a frame, so every stream with a reading reader keeps moving
and engine memory for channel data stays under the budget plus one frame per channel.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import Final, Literal, final

import attrs

from .._codes import CHANNEL_EXPIRED
from ..protocol import JSON

Direction = Literal["read", "write"]


class EndState(enum.Enum):
    UNATTACHED = "unattached"
    ATTACHED = "attached"
    FINISHED = "finished"
    EXPIRED = "expired"


#: What each end state may become; anything else is a bug (see ``ChannelState._move``).
END_TRANSITIONS: Final[dict[EndState, frozenset[EndState]]] = {
    EndState.UNATTACHED: frozenset({EndState.ATTACHED, EndState.EXPIRED}),
    EndState.ATTACHED: frozenset({EndState.FINISHED}),
    EndState.FINISHED: frozenset(),
    EndState.EXPIRED: frozenset(),
}


class Phase(enum.Enum):
    WAITING = "waiting"  # an end has not attached yet
    STREAMING = "streaming"
    DRAINING = "draining"  # the writer is done; buffered frames still going out
    DONE = "done"


@final
class BufferBudget:
    """Bytes held by all channels of one engine, against one limit.

    A channel that must wait for room queues itself once. A release wakes queued channels in
    order, as many as the freed room fits at their last frame's size, so a release costs
    O(woken), never O(channels), and woken writers do not overshoot the limit by much.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: collections.deque[ChannelState] = collections.deque()

    def spent(self) -> bool:
        return self.used >= self.limit

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def release(self, size: int) -> None:
        self.used -= size
        waiting = self._waiting
        room = self.limit - self.used
        while waiting and room > 0:
            channel = waiting.popleft()
            channel.budget_queued = False
            room -= max(channel.last_frame_size, 1)
            channel.wake()

    def wait_for_room(self, channel: ChannelState) -> None:
        """Queue ``channel`` to be woken when room frees up (at most once)."""
        if not channel.budget_queued:
            channel.budget_queued = True
            self._waiting.append(channel)


def _no_wake() -> None:
    pass


@attrs.define(eq=False, kw_only=True)
class ChannelState:
    """One channel: its ends, its buffer and its counters.

    ``wake`` is called whenever something a waiting writer or pump may care about changed
    (a frame arrived, room was made, an end moved on).
    """

    channel_id: str
    writer_key: str
    reader_key: str
    owner: str
    created: float
    expires_at: float
    max_items: int
    max_bytes: int
    budget: BufferBudget
    wake: Callable[[], None] = _no_wake
    writer: EndState = EndState.UNATTACHED
    reader: EndState = EndState.UNATTACHED
    #: How the writer ended: ``(1000, "")`` for a clean EOF, else the abort code and reason.
    writer_end: tuple[int, str] | None = None
    #: Why the reader side ended early (or expired); ``None`` while it may still read.
    reader_end: tuple[int, str] | None = None
    #: The reader got the final close (end of stream).
    delivered: bool = False
    #: Out of the broker's table: no end can attach any more.
    removed: bool = False
    buffer: collections.deque[str | bytes] = attrs.field(factory=collections.deque)
    buffered_bytes: int = 0
    #: Bytes taken by the reader's pump and not yet written.
    in_flight: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    last_frame_size: int = 0
    #: Clock time of the last frame in or out (for deadlines that follow progress).
    last_progress: float = 0.0
    budget_queued: bool = False

    # --- ends ------------------------------------------------------------------------------

    def _move(self, direction: Direction, state: EndState) -> None:
        current = self.writer if direction == "write" else self.reader
        if state not in END_TRANSITIONS[current]:
            raise AssertionError(f"channel {self.channel_id} {direction} end: {current} -> {state}")
        if direction == "write":
            self.writer = state
        else:
            self.reader = state
        self.wake()

    def attach(self, direction: Direction) -> None:
        self._move(direction, EndState.ATTACHED)

    def finish(self, direction: Direction) -> None:
        """The broker is done serving this end."""
        self._move(direction, EndState.FINISHED)

    def attached(self, direction: Direction) -> bool:
        """Whether this end ever attached."""
        state = self.writer if direction == "write" else self.reader
        return state in (EndState.ATTACHED, EndState.FINISHED)

    @property
    def both_attached(self) -> bool:
        return self.attached("write") and self.attached("read")

    @property
    def finished(self) -> bool:
        """Both ends attached and were served to the end: the channel can go."""
        return self.writer is EndState.FINISHED and self.reader is EndState.FINISHED

    @property
    def expired(self) -> bool:
        return EndState.EXPIRED in (self.writer, self.reader)

    def expire(self) -> None:
        """The TTL passed before both ends attached: the missing ends expire, and the end
        that is there learns why (a writer is stopped, a reader gets code 4004)."""
        if self.writer is EndState.UNATTACHED:
            self._move("write", EndState.EXPIRED)
            if self.writer_end is None:
                self.writer_end = (CHANNEL_EXPIRED, "channel expired: the writer never attached")
        if self.reader is EndState.UNATTACHED:
            self._move("read", EndState.EXPIRED)
            if self.reader_end is None:
                self.reader_end = (CHANNEL_EXPIRED, "channel expired: the reader never attached")
            self.clear()

    @property
    def phase(self) -> Phase:
        if self.removed:
            return Phase.DONE
        if not self.both_attached:
            return Phase.WAITING
        if self.writer_end is not None:
            return Phase.DRAINING
        return Phase.STREAMING

    # --- frames ----------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Bytes this channel keeps in the engine: buffered plus being written."""
        return self.buffered_bytes + self.in_flight

    def full(self) -> bool:
        """No room for another frame: this channel's own limits, or the shared budget (a
        channel that holds nothing may always take one)."""
        if self.held >= self.max_bytes or len(self.buffer) >= self.max_items:
            return True
        if self.held and self.budget.spent():
            self.budget.wait_for_room(self)
            return True
        return False

    def add(self, message: str | bytes, now: float) -> None:
        """A frame from the writer, for the reader."""
        size = len(message)
        self.buffer.append(message)
        self.buffered_bytes += size
        self.budget.take(size)
        self.bytes_in += size
        self.frames_in += 1
        self.last_frame_size = size
        self.last_progress = now
        self.wake()

    def passed_through(self, size: int, now: float) -> None:
        """A frame went straight from the writer to an in-process reader (never held)."""
        self.bytes_in += size
        self.bytes_out += size
        self.frames_in += 1
        self.last_progress = now

    def take_all(self) -> tuple[list[str | bytes], int]:
        """Everything buffered and its size, now in flight: it stays held (and counted
        against the budget) until :meth:`written`."""
        batch = list(self.buffer)
        size = self.buffered_bytes
        self.buffer.clear()
        self.buffered_bytes = 0
        self.in_flight += size
        self.wake()
        return batch, size

    def written(self, size: int, now: float, *, delivered: bool = True) -> None:
        """A batch taken with :meth:`take_all` is written (or dropped: ``delivered=False``)."""
        self.in_flight -= size
        if delivered:
            self.bytes_out += size
            self.last_progress = now
        self.budget.release(size)
        self.wake()

    def clear(self) -> None:
        """Drop the buffer (nobody will read it) and give its bytes back."""
        self.buffer.clear()
        released, self.buffered_bytes = self.buffered_bytes, 0
        self.budget.release(released)
        self.wake()

    def stop_writer(self, code: int, reason: str) -> None:
        """The reader is gone (or the channel expired): the writer must be closed with
        ``(code, reason)``; what it buffered is dropped."""
        if self.reader_end is None:
            self.reader_end = (code, reason)
        self.clear()

    def describe(self, now: float) -> JSON:
        """The row of ``engine::channels::list`` (never the keys)."""
        return {
            "channel_id": self.channel_id,
            "state": self.phase.value,
            "owner": self.owner,
            "writer_attached": self.attached("write"),
            "reader_attached": self.attached("read"),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "frames_in": self.frames_in,
            "buffered_bytes": self.held,
            "age_s": round(now - self.created, 3),
            "expires_in_s": None
            if self.both_attached
            else round(max(self.expires_at - now, 0.0), 3),
        }
