"""Running coroutines without a task each when they finish without waiting.

Theory of operation
-------------------
A worker answers most calls with a handler that returns without ever waiting (it computes
and returns). A trio task per call costs more than such a handler: starting it, scheduling
it, and retiring it into its nursery. So invocations go to an :class:`InlineRunner`: one
task (the *queue task*) takes the queued coroutines in order and runs each up to its first
suspension (``coro.send(None)``, no task switch). One that returns there is done: it cost no
task at all.

One that suspends cannot move to another task: trio ties what it waits for, and the cancel
scopes it entered, to the task that ran it. So it stays: the queue task keeps driving it to its
end (each value trio sends and each exception it throws go into the coroutine, each trap the
coroutine yields goes to trio: the task is simply that coroutine's task from then on), and a
fresh task takes over the queue, so a waiting handler never holds up the calls behind it. It is
then exactly a task per call, as before.

Each coroutine runs in its own copy of the context, as a task would, so a context variable set
by one never leaks into the next. Cancellation is the nursery's, as for tasks: when the runner's
nursery is cancelled, the queue task and every coroutine it drives are.
"""

from __future__ import annotations

import collections
import contextvars
import math
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, final

import trio

Job = Callable[[], Coroutine[Any, Any, None]]
_Entry = tuple[Job, float, Callable[[], None] | None]


@final
class InlineRunner:
    """Runs coroutines in ``nursery``: inline when they finish without waiting, in a task of
    their own otherwise (see the module docstring)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._jobs: collections.deque[_Entry] = collections.deque()
        #: The queue task, when it waits for work.
        self._parked: trio.lowlevel.Task | None = None
        #: A queue task exists (parked, scheduled or running).
        self._serving = False

    @property
    def backlog(self) -> bool:
        """Jobs wait to start (so work that finishes now is not the last of its burst)."""
        return bool(self._jobs)

    def submit(
        self,
        job: Job,
        *,
        deadline: float = math.inf,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        """Run ``job()`` soon, after everything submitted before it has started. If it waits,
        it is cancelled at ``deadline`` (then ``on_timeout()`` is called)."""
        self._jobs.append((job, deadline, on_timeout))
        parked = self._parked
        if parked is not None:
            self._parked = None
            trio.lowlevel.reschedule(parked)
        elif not self._serving:
            self._serving = True
            self._nursery.start_soon(self._serve)

    async def _serve(self) -> None:
        jobs = self._jobs
        # One scope around every job this task runs, entered before the first of them: it is
        # outside any scope a job enters, so it can carry the deadline of the one job that
        # waits (and none before: a job that returns without waiting needs no scope).
        with trio.CancelScope() as scope:
            while True:
                if not jobs:
                    self._parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort)
                    continue
                job, deadline, on_timeout = jobs.popleft()
                coro = job()
                context = contextvars.copy_context()
                try:
                    trap = context.run(coro.send, None)
                except StopIteration:
                    continue  # done without waiting: the common case
                except BaseException:
                    self._serving = False
                    raise
                # It waits: this task stays with it; the queue goes on in a new task.
                self._serving = bool(jobs)
                if jobs:
                    self._nursery.start_soon(self._serve)
                scope.deadline = deadline
                await _drive(coro, trap, context)
                return
        if on_timeout is not None:  # cancelled at the deadline (the scope caught it)
            on_timeout()

    def _abort(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._parked = None
        self._serving = False
        return trio.lowlevel.Abort.SUCCEEDED


@types.coroutine
def _drive(
    coro: Coroutine[Any, Any, None], trap: object, context: contextvars.Context
) -> Generator[Any, Any, None]:
    """Go on running ``coro``, suspended at ``trap``, as this task's own coroutine."""
    while True:
        try:
            value = yield trap
        except BaseException as exc:
            try:
                trap = context.run(coro.throw, exc)
            except StopIteration:
                return
        else:
            try:
                trap = context.run(coro.send, value)
            except StopIteration:
                return
