"""The channel state machine and the shared byte budget, driven synchronously (no trio.run)."""

from __future__ import annotations

import functools

import pytest

from iii_trio.engine._channel import (
    END_TRANSITIONS,
    BufferBudget,
    ChannelState,
    EndState,
    Phase,
)


def _channel(budget: BufferBudget, *, max_bytes: int = 100, max_items: int = 64) -> ChannelState:
    woken: list[int] = []
    channel = ChannelState(
        channel_id="c",
        writer_key="w",
        reader_key="r",
        owner="o",
        created=0.0,
        expires_at=300.0,
        max_items=max_items,
        max_bytes=max_bytes,
        budget=budget,
    )
    channel.wake = lambda: woken.append(1)
    return channel


def test_the_transition_table_is_closed() -> None:
    for state, targets in END_TRANSITIONS.items():
        assert state not in targets
        assert targets <= set(EndState)
    assert END_TRANSITIONS[EndState.FINISHED] == frozenset()
    assert END_TRANSITIONS[EndState.EXPIRED] == frozenset()


def test_phases_follow_the_ends() -> None:
    channel = _channel(BufferBudget(1000))
    phases = [channel.phase]
    channel.attach("write")
    phases.append(channel.phase)
    channel.attach("read")
    phases.append(channel.phase)
    channel.writer_end = (1000, "")
    phases.append(channel.phase)
    assert phases == [Phase.WAITING, Phase.WAITING, Phase.STREAMING, Phase.DRAINING]
    assert channel.attached("write") and channel.both_attached
    channel.finish("write")
    done = [channel.finished]
    channel.finish("read")
    done.append(channel.finished)
    assert done == [False, True]
    channel.removed = True
    assert channel.phase is Phase.DONE


@pytest.mark.parametrize(
    ("steps", "bad"),
    [
        ([], "finish"),  # finishing an end that never attached
        (["attach"], "attach"),  # attaching twice
        (["attach", "finish"], "attach"),  # attaching after the end was served
    ],
)
def test_illegal_end_steps_raise(steps: list[str], bad: str) -> None:
    channel = _channel(BufferBudget(1000))
    for step in steps:
        getattr(channel, step)("write")
    with pytest.raises(AssertionError):
        getattr(channel, bad)("write")


def test_expiry_tells_the_attached_end_why() -> None:
    reader_waits = _channel(BufferBudget(1000))
    reader_waits.attach("read")
    reader_waits.expire()
    assert reader_waits.writer is EndState.EXPIRED and reader_waits.reader is EndState.ATTACHED
    assert reader_waits.writer_end == (4004, "channel expired: the writer never attached")
    assert reader_waits.expired

    writer_waits = _channel(BufferBudget(1000))
    writer_waits.attach("write")
    writer_waits.add(b"x" * 10, 1.0)
    writer_waits.expire()
    assert writer_waits.reader_end is not None and writer_waits.reader_end[0] == 4004
    assert writer_waits.held == 0  # nobody will read it: given back
    assert writer_waits.budget.used == 0


def test_a_batch_being_written_is_still_held() -> None:
    """Issue 14: a frame in the pump's unfinished write counted as 'empty again', so a channel
    could hold one more frame beyond the shared budget."""
    budget = BufferBudget(100)
    channel = _channel(budget, max_bytes=1000)
    channel.add(b"a" * 100, 1.0)
    assert budget.spent() and channel.full()
    batch, size = channel.take_all()
    assert batch == [b"a" * 100] and size == 100
    assert channel.buffered_bytes == 0 and channel.held == 100
    assert channel.full()  # still holding the batch: no new frame yet
    channel.written(size, 2.0)
    assert channel.held == 0 and budget.used == 0 and channel.bytes_out == 100
    assert not channel.full()
    assert channel.last_progress == 2.0


def test_a_channel_that_holds_nothing_may_always_take_one_frame() -> None:
    budget = BufferBudget(100)
    first, second = _channel(budget), _channel(budget)
    first.add(b"x" * 150, 1.0)  # over the budget by itself
    assert budget.spent()
    assert not second.full()  # holds nothing: may take one
    second.add(b"y" * 10, 1.0)
    assert second.full()  # holds something while the budget is spent
    assert second.budget_queued


def test_release_wakes_queued_channels_as_far_as_the_room_goes() -> None:
    budget = BufferBudget(100)
    holder = _channel(budget, max_bytes=1000)
    waiters = [_channel(budget) for _ in range(3)]
    woken: list[int] = []
    for index, channel in enumerate(waiters):
        channel.add(b"w" * 30, 1.0)
        channel.wake = functools.partial(woken.append, index)
    holder.add(b"h" * 100, 1.0)
    for channel in waiters:
        assert channel.full()
    _, size = holder.take_all()
    holder.written(size, 2.0)  # used 190 -> 90: room for 10 bytes
    assert woken == [0]  # one woken: its last frame (30 bytes) uses up the room
    assert not waiters[0].budget_queued and waiters[1].budget_queued


def test_own_limits_in_bytes_and_frames() -> None:
    budget = BufferBudget(10_000)
    by_bytes = _channel(budget, max_bytes=50)
    by_bytes.add(b"x" * 50, 1.0)
    assert by_bytes.full()
    by_frames = _channel(budget, max_items=2)
    by_frames.add(b"a", 1.0)
    by_frames.add(b"b", 1.0)
    assert by_frames.full()


def test_stop_writer_drops_what_was_buffered() -> None:
    budget = BufferBudget(1000)
    channel = _channel(budget)
    channel.add(b"x" * 40, 1.0)
    channel.stop_writer(4002, "reader closed")
    assert channel.reader_end == (4002, "reader closed")
    assert channel.held == 0 and budget.used == 0
    channel.stop_writer(4003, "later")  # the first reason stays
    assert channel.reader_end == (4002, "reader closed")


def test_describe_never_shows_keys() -> None:
    channel = _channel(BufferBudget(1000))
    channel.attach("write")
    row = channel.describe(10.0)
    assert isinstance(row, dict)
    assert "w" not in row.values() and "r" not in row.values()
    assert row["state"] == "waiting" and row["writer_attached"] is True
    assert row["expires_in_s"] == 290.0
