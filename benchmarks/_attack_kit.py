"""What ``benchmarks.attacks`` is built from: raw iii peers (JSON written by hand on iii_trio's
own WebSocket, no SDK), the engine under test and the healthy side as the harness sees them,
the sizes of a run and what an attack leaves behind.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio

from iii_trio._ws import ConnectionClosed, WebSocket, connect_websocket

from ._common import KiB, MiB
from ._harness import Child, Group, memory_kib

#: Largest message a raw peer accepts (a functions list carrying 4 MiB of metadata is 4 MiB).
MAX_MESSAGE: Final = 1 << 30
#: Messages above this size are counted, not parsed: a drain may read hundreds of 4 MiB lists.
PARSE_LIMIT: Final = 256 * KiB
#: Seconds a drain goes on without a message before it concludes the engine sent everything.
DRAIN_QUIET: Final = 1.0


@attrs.frozen(kw_only=True)
class Sizes:
    """Counts and time bounds of one run (``quick()`` for a short one)."""

    #: Seconds of each healthy measurement before and after an attack.
    window: float = 3.0
    #: Seconds between an attacker leaving and the "after" RSS reading.
    settle: float = 3.0
    #: Seconds an attacker reads what is waiting for it once the attack is over.
    drain: float = 3.0
    #: Healthy caller connections (one call in flight each) and their per-call timeout.
    callers: int = 3
    call_timeout: float = 2.0
    # 1: head-of-line blocking, caller side
    hol_calls: int = 800
    hol_payload: int = 16 * KiB
    hol_hold: float = 10.0
    # 2: head-of-line blocking, executor side
    void_calls: int = 5000
    void_payload: int = 4 * KiB
    void_seconds: float = 20.0
    void_probe_every: int = 25
    # 3: a task per message
    timeout_calls: int = 100_000
    timeout_hold: float = 3.0
    # 4: outboxes bounded in messages
    metadata_bytes: int = 4 * MiB
    list_calls: int = 300
    list_hold: float = 5.0
    # 5: O(workers x functions)
    idle_workers: int = 505
    functions_per_worker: int = 20
    disconnect: int = 500
    many_functions: int = 200_000
    # 6: liveness
    liveness_bound: float = 60.0
    # 7: a parse bomb (issue 14): ``[],`` repeated, under the engine's max_message_size
    bomb_bytes: int = 79 * MiB
    bomb_hold: float = 5.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            window=2.0,
            settle=2.0,
            hol_hold=5.0,
            void_calls=2000,
            void_seconds=10.0,
            timeout_calls=20_000,
            list_calls=100,
            idle_workers=105,
            disconnect=100,
            many_functions=50_000,
            liveness_bound=20.0,
            bomb_bytes=20 * MiB,
        )


# --- raw peers -----------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def invoke(
    function_id: str,
    data: Any = None,
    *,
    call_id: str | None = None,
    void: bool = False,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "invokefunction", "function_id": function_id, "data": data}
    if call_id is not None:
        msg["invocation_id"] = call_id
    if void:
        msg["action"] = {"type": "void"}
    if timeout_ms is not None:
        msg["timeout_ms"] = timeout_ms
    return msg


def register(function_id: str, metadata: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "registerfunction", "id": function_id}
    if metadata is not None:
        msg["metadata"] = metadata
    return msg


def classify(raw: str | bytes) -> tuple[str, dict[str, Any] | None]:
    """The kind of a message from the engine (its ``type``; ``result`` or ``error:<code>`` for
    an ``invocationresult``; ``large`` above :data:`PARSE_LIMIT`), and the message if parsed."""
    if len(raw) > PARSE_LIMIT:
        return "large", None
    try:
        msg = json.loads(raw)
    except ValueError:
        return "unparsable", None
    if not isinstance(msg, dict):
        return "unparsable", None
    kind = str(msg.get("type"))
    if kind == "invocationresult":
        error = msg.get("error")
        kind = f"error:{error.get('code')}" if isinstance(error, dict) else "result"
    return kind, msg


class PeerClosed(Exception):
    """The connection closed before the answer came."""


@attrs.define
class _Answer:
    event: trio.Event = attrs.field(factory=trio.Event)
    msg: dict[str, Any] | None = None


class RawPeer:
    """One worker connection without the SDK.

    It reads only when asked to: :meth:`call` reads until its answer (unless a background
    reader runs, :meth:`read_in_background`, which also answers pings), and :meth:`drain`
    reads what is waiting. Otherwise it reads nothing, like a peer that stopped reading its
    socket. Every message read is counted by kind in :attr:`seen`.
    """

    def __init__(self, ws: WebSocket, worker_id: str) -> None:
        self.ws = ws
        self.worker_id = worker_id
        self.seen: Counter[str] = Counter()
        self.close_code: int | None = None
        self.close_reason = ""
        self._waiting: dict[str, _Answer] = {}
        self._reading = False

    @classmethod
    async def connect(cls, url: str) -> RawPeer:
        """Connect and read the engine's ``workerregistered`` (nothing more)."""
        ws = await connect_websocket(url, max_message_size=MAX_MESSAGE)
        with trio.fail_after(30):
            while True:
                kind, msg = classify(await ws.receive())
                if kind == "workerregistered" and msg is not None:
                    return cls(ws, str(msg["worker_id"]))

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    async def send(self, messages: Sequence[dict[str, Any]]) -> None:
        await self.ws.send_many([json.dumps(m) for m in messages])

    def read_in_background(self, nursery: trio.Nursery) -> None:
        self._reading = True
        nursery.start_soon(self._read_loop)

    async def _read_loop(self) -> None:
        while await self._read_one():
            pass

    async def _read_one(self) -> bool:
        """Read and dispatch one message; False once the connection is closed."""
        try:
            raw = await self.ws.receive()
        except ConnectionClosed as exc:
            self._on_closed(exc.code, exc.reason)
            return False
        except trio.ClosedResourceError:
            self._on_closed(1000, "closed by the harness")
            return False
        kind, msg = classify(raw)
        self.seen[kind] += 1
        if kind == "ping":
            try:
                await self.send([{"type": "pong"}])
            except trio.BrokenResourceError:
                pass  # the next read reports the closed connection
        elif msg is not None and msg.get("type") == "invocationresult":
            answer = self._waiting.get(str(msg.get("invocation_id")))
            if answer is not None:
                answer.msg = msg
                answer.event.set()
        return True

    def _on_closed(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        for answer in self._waiting.values():
            answer.event.set()

    async def call(self, function_id: str, data: Any = None, *, timeout: float) -> dict[str, Any]:
        """Invoke ``function_id`` and return the ``invocationresult``.

        Raises:
            trio.TooSlowError: no answer within ``timeout`` seconds.
            PeerClosed: the connection closed first.
        """
        call_id = new_id()
        answer = self._waiting[call_id] = _Answer()
        try:
            with trio.fail_after(timeout):
                try:
                    await self.send([invoke(function_id, data, call_id=call_id)])
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise PeerClosed(str(exc)) from exc
                while not answer.event.is_set():
                    if self._reading:
                        await answer.event.wait()
                    elif not await self._read_one():
                        break
        finally:
            del self._waiting[call_id]
        if answer.msg is None:
            raise PeerClosed(f"{self.close_code} {self.close_reason}")
        return answer.msg

    async def barrier(self, timeout: float = 120.0) -> None:
        """Wait until the engine has handled everything sent so far (it handles a
        connection's messages in order): one call the engine answers itself."""
        await self.call("engine::channels::list", {}, timeout=timeout)

    async def drain(self, seconds: float) -> tuple[Counter[str], int]:
        """Read what is waiting, for at most ``seconds`` (less if the engine closes the
        connection or sends no byte for :data:`DRAIN_QUIET`); the kinds of the messages read,
        and the bytes."""
        before, bytes_before = Counter(self.seen), self.ws.bytes_received
        with trio.move_on_after(seconds):
            while not self.closed:
                mark = self.ws.bytes_received
                # A large message may arrive slowly: what counts is that bytes keep coming.
                with trio.move_on_after(DRAIN_QUIET) as quiet:
                    if not await self._read_one():
                        break
                if quiet.cancelled_caught and self.ws.bytes_received == mark:
                    break
        return self.seen - before, self.ws.bytes_received - bytes_before

    async def abort(self) -> None:
        """Drop the connection without a close handshake (as a killed process would)."""
        await self.ws.abort()


# --- the engine and the healthy side -------------------------------------------------------


async def ask(child: Child, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """``child.request`` from a thread, so the harness's own event loop goes on."""
    return await trio.to_thread.run_sync(child.request, cmd, timeout)


@attrs.define
class EngineUnderTest:
    """The engine process, from ``_harness.start_engine_under_test``."""

    child: Child
    ready: dict[str, Any]
    #: The largest event-loop stall read since :meth:`new_window`.
    worst_lag_ms: float = 0.0

    @property
    def url(self) -> str:
        return str(self.ready["url"])

    @property
    def pid(self) -> int:
        return self.child.pid

    def rss_kib(self) -> int:
        return memory_kib(self.pid)["VmRSS"]

    async def lag_ms(self) -> float:
        """The engine's longest event-loop stall since the last reading, in ms."""
        value = float((await ask(self.child, {"cmd": "lag"}))["max_ms"])
        self.worst_lag_ms = max(self.worst_lag_ms, value)
        return value

    async def new_window(self) -> None:
        await self.lag_ms()
        self.worst_lag_ms = 0.0


@attrs.define
class HealthySide:
    """The ``healthy`` role of ``_attack_peer``: SDK callers of ``probe::echo``."""

    child: Child
    engine: EngineUnderTest

    @classmethod
    async def start_in(cls, group: Group, engine: EngineUnderTest, sizes: Sizes) -> HealthySide:
        child = group.start(
            "healthy",
            "_attack_peer",
            "healthy",
            "--url",
            engine.url,
            "--callers",
            str(sizes.callers),
            "--call-timeout",
            str(sizes.call_timeout),
        )
        await trio.to_thread.run_sync(child.read, 60.0)
        return cls(child, engine)

    async def start(self) -> None:
        await self.engine.new_window()
        await ask(self.child, {"cmd": "start"})

    async def stop(self) -> dict[str, Any]:
        """The window's statistics, with the engine's longest stall in it."""
        window = await ask(self.child, {"cmd": "stop"})
        window.pop("event")
        await self.engine.lag_ms()
        window["engine_lag_ms"] = self.engine.worst_lag_ms
        return window

    async def measure(self, seconds: float) -> dict[str, Any]:
        await self.start()
        await trio.sleep(seconds)
        return await self.stop()


# --- what an attack leaves behind ----------------------------------------------------------


@attrs.define
class Outcome:
    """How the engine treated a misbehaving connection.

    ``listed``: the engine still had it in ``engine::workers::list`` when the attack ended.
    Then it read what was waiting for it (``read``: message kinds; ``read_mib``; for
    ``drained_s`` seconds) and saw the engine's close code, if the engine closed it.
    """

    who: str
    listed: bool | None
    read: dict[str, int]
    read_mib: float
    drained_s: float
    close_code: int | None
    close_reason: str

    def brief(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        listing = {True: "listed", False: "unlisted", None: "?"}[self.listed]
        top = ", ".join(f"{n} {kind}" for kind, n in Counter(self.read).most_common(2))
        return f"{state}, {listing}; read {top or 'no message'} ({self.read_mib:g} MiB)"


@attrs.define
class Env:
    """What an attack works with. Peers made by :meth:`peer` are dropped at the end."""

    engine: EngineUnderTest
    group: Group
    nursery: trio.Nursery
    sizes: Sizes
    observer: RawPeer
    details: dict[str, Any] = attrs.field(factory=dict)
    outcome: Outcome | None = None
    #: The attacker column of the table when there is no :class:`Outcome` to show.
    verdict: str | None = None
    peers: list[RawPeer] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return self.engine.url

    async def peer(self, *, reading: bool = False) -> RawPeer:
        peer = await RawPeer.connect(self.url)
        self.peers.append(peer)
        if reading:
            peer.read_in_background(self.nursery)
        return peer

    async def workers(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """``engine::workers::list``, asked by the observer."""
        answer = await self.observer.call("engine::workers::list", {}, timeout=timeout)
        rows: list[dict[str, Any]] = answer["result"]["workers"]
        return rows

    async def settle(self, who: str, peer: RawPeer) -> None:
        """Record how the engine treated ``peer`` (see :class:`Outcome`), then drop it."""
        listed = peer.worker_id in {row["id"] for row in await self.workers()}
        t0 = trio.current_time()
        read, size = await peer.drain(self.sizes.drain)
        self.outcome = Outcome(
            who=who,
            listed=listed,
            read=dict(read),
            read_mib=round(size / MiB, 1),
            drained_s=round(trio.current_time() - t0, 2),
            close_code=peer.close_code,
            close_reason=peer.close_reason,
        )
        await peer.abort()

    async def close(self) -> None:
        for peer in self.peers:
            await peer.abort()
