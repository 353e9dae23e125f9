"""Invocations in flight: who called, who executes, when they expire. Synchronous, no I/O.

The executor sees ``target_id``; the caller knows the call by ``caller_id``. They are the same
UUID unless the caller's id was already taken, so two callers can never collide.

Deadlines sit in a heap, lazily: an invocation that finished or was postponed leaves its old
entry behind, which is skipped when it comes up (and the heap is rebuilt when such entries
outnumber the live ones).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol, final

import attrs

from ..protocol import new_uuid


class Progress(Protocol):
    """Something that moves bytes for a call (a channel): when it last did."""

    @property
    def last_progress(self) -> float: ...


@attrs.define(eq=False, kw_only=True)
class Invocation:
    target_id: str
    #: The caller's id for the call; ``None`` when nobody waits for the answer (void).
    caller_id: str | None
    function_id: str
    caller: str  # worker id
    executor: str  # worker id
    deadline: float
    started: float
    #: Seconds the call may go without progress (its deadline rule).
    timeout: float = 0.0
    #: The channels its payload named: the deadline follows their progress.
    channels: tuple[Progress, ...] = ()


@final
class InvocationTable:
    def __init__(self) -> None:
        self._by_id: dict[str, Invocation] = {}
        self._by_worker: dict[str, set[str]] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._calls: dict[str, int] = {}

    def new_target_id(self, caller_id: str | None) -> str:
        if caller_id is not None and caller_id not in self._by_id:
            return caller_id
        return new_uuid()

    def add(self, inv: Invocation) -> None:
        assert inv.target_id not in self._by_id
        self._by_id[inv.target_id] = inv
        self._by_worker.setdefault(inv.caller, set()).add(inv.target_id)
        self._by_worker.setdefault(inv.executor, set()).add(inv.target_id)
        self._calls[inv.caller] = self._calls.get(inv.caller, 0) + 1
        heap = self._deadlines
        if len(heap) > 2 * len(self._by_id) + 1024:
            # Finished invocations leave their deadline behind until it comes up; rebuild
            # now and then so the heap stays proportional to what is really in flight.
            heap[:] = [entry for entry in heap if entry[2] in self._by_id]
            heapq.heapify(heap)
        heapq.heappush(heap, (inv.deadline, next(self._seq), inv.target_id))

    def postpone(self, inv: Invocation, deadline: float) -> None:
        """Move a live invocation's deadline later."""
        inv.deadline = deadline
        heapq.heappush(self._deadlines, (deadline, next(self._seq), inv.target_id))

    def drop(self, inv: Invocation) -> None:
        """Remove a live invocation (it expired)."""
        if self._by_id.get(inv.target_id) is inv:
            self._drop(inv)

    def _drop(self, inv: Invocation) -> None:
        del self._by_id[inv.target_id]
        left = self._calls[inv.caller] - 1
        if left:
            self._calls[inv.caller] = left
        else:
            del self._calls[inv.caller]
        for worker in (inv.caller, inv.executor):
            ids = self._by_worker.get(worker)
            if ids is not None:
                ids.discard(inv.target_id)
                if not ids:
                    del self._by_worker[worker]

    def complete(self, target_id: str, executor: str) -> Invocation | None:
        """Remove and return the invocation if ``executor`` is the one that was asked."""
        inv = self._by_id.get(target_id)
        if inv is None or inv.executor != executor:
            return None
        self._drop(inv)
        return inv

    def remove_worker(self, worker_id: str) -> list[Invocation]:
        """Remove every invocation ``worker_id`` called or executes."""
        gone = [self._by_id[t] for t in self._by_worker.get(worker_id, ())]
        for inv in gone:
            self._drop(inv)
        return gone

    def due(self, now: float) -> list[Invocation]:
        """The live invocations whose deadline is at or before ``now`` (still in the table:
        the caller drops or postpones each)."""
        due = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, target_id = heapq.heappop(heap)
            inv = self._by_id.get(target_id)
            if inv is not None and inv.deadline == deadline:
                due.append(inv)
        return due

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and heap[0][2] not in self._by_id:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pending_calls(self, worker_id: str) -> int:
        """Invocations ``worker_id`` called that are still waiting."""
        return self._calls.get(worker_id, 0)

    def active_for(self, worker_id: str) -> int:
        return len(self._by_worker.get(worker_id, ()))

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Invocation]:
        return list(self._by_id.values())
