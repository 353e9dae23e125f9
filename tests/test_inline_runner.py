"""The worker's InlineRunner: a job that finishes without waiting costs no task; one that
waits keeps the task it started in and never holds up the jobs behind it; each job has its
own context; cancellation reaches every job, waiting or queued."""

from __future__ import annotations

import contextvars
from functools import partial

import pytest
import trio
import trio.testing

from iii_trio.worker._inline import InlineRunner

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def test_jobs_that_do_not_wait_share_one_task_in_order() -> None:
    tasks: list[trio.lowlevel.Task] = []
    order: list[int] = []

    async def job(n: int) -> None:
        tasks.append(trio.lowlevel.current_task())
        order.append(n)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            runner = InlineRunner(nursery)
            for n in range(5):
                runner.submit(partial(job, n))
            await trio.testing.wait_all_tasks_blocked()
            for n in range(5, 10):
                runner.submit(partial(job, n))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert order == list(range(10))
    assert len(set(tasks)) == 1


async def test_a_waiting_job_keeps_its_task_and_does_not_hold_up_the_next() -> None:
    release = trio.Event()
    seen: dict[str, trio.lowlevel.Task] = {}
    done: list[str] = []

    async def waiter() -> None:
        seen["waiter"] = trio.lowlevel.current_task()
        with trio.move_on_after(10):  # a cancel scope entered before waiting, exited after
            await release.wait()
        seen["waiter after"] = trio.lowlevel.current_task()
        done.append("waiter")

    async def quick() -> None:
        seen["quick"] = trio.lowlevel.current_task()
        done.append("quick")
        release.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            runner = InlineRunner(nursery)
            runner.submit(waiter)
            runner.submit(quick)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()  # the queue task waits for work until then
    assert done == ["quick", "waiter"]
    assert seen["waiter"] is seen["waiter after"]
    assert seen["quick"] is not seen["waiter"]


async def test_each_job_has_its_own_context() -> None:
    got: list[str] = []

    async def setter() -> None:
        var.set("set by the first job")
        await trio.lowlevel.checkpoint()
        got.append(var.get())  # still its own value after waiting

    async def reader() -> None:
        got.append(var.get())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            runner = InlineRunner(nursery)
            runner.submit(setter)
            runner.submit(reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert sorted(got) == ["set by the first job", "unset"]
    assert var.get() == "unset"


async def test_cancelling_the_nursery_cancels_waiting_jobs() -> None:
    cancelled: list[str] = []

    async def sleeper(name: str) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(name)
            raise

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            runner = InlineRunner(nursery)
            runner.submit(lambda: sleeper("a"))
            runner.submit(lambda: sleeper("b"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert sorted(cancelled) == ["a", "b"]


async def test_an_error_in_a_job_reaches_the_nursery() -> None:
    async def broken() -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("boom")

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom")), trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            InlineRunner(nursery).submit(broken)


async def test_a_job_that_waits_is_cancelled_at_its_deadline(autojump_clock: object) -> None:
    timed_out: list[str] = []
    outcome: list[str] = []

    async def slow() -> None:
        with trio.move_on_after(100):  # its own scope, inside the runner's
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                outcome.append("cancelled")
                raise

    async def quick() -> None:
        outcome.append("quick")  # a past deadline does not matter to a job that never waits

    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            runner = InlineRunner(nursery)
            now = trio.current_time()
            runner.submit(slow, deadline=now + 5, on_timeout=lambda: timed_out.append("slow"))
            runner.submit(quick, deadline=now - 1, on_timeout=lambda: timed_out.append("quick"))
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
    assert outcome == ["quick", "cancelled"]
    assert timed_out == ["slow"]
