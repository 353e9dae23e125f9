"""The keepalive's timing, on trio's autojump clock: connections made together are pinged
spread over time, and a silent one is reported after its interval and timeout."""

from __future__ import annotations

from typing import cast

import trio

from iii_trio._ws import WebSocket
from iii_trio.engine._connection import keepalive


class _Peer:
    """What keepalive needs of a socket: ``ping``, answered at once or never."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.pings: list[float] = []

    async def ping(self, payload: bytes) -> None:
        self.pings.append(trio.current_time())
        if not self.answers:
            await trio.sleep_forever()


async def test_connections_made_together_are_pinged_spread_over_the_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    peers = [_Peer(answers=True) for _ in range(50)]
    with trio.move_on_after(100):
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(keepalive, cast(WebSocket, peer), 20.0, 5.0)
    firsts = sorted(peer.pings[0] for peer in peers)
    assert firsts[0] >= 10.0 and firsts[-1] <= 20.0  # half to all of the interval
    assert firsts[-1] - firsts[0] > 5.0  # spread, not one pass of the loop
    for peer in peers:  # then every interval
        gaps = {round(b - a, 6) for a, b in zip(peer.pings, peer.pings[1:], strict=False)}
        assert gaps == {20.0}


async def test_a_silent_peer_is_reported_within_interval_plus_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    peer = _Peer(answers=False)
    start = trio.current_time()
    assert await keepalive(cast(WebSocket, peer), 20.0, 5.0)
    assert 10.0 + 5.0 <= trio.current_time() - start <= 20.0 + 5.0
    assert len(peer.pings) == 1
