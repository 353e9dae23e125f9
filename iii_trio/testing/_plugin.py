"""pytest plugin (entry point ``iii_trio``): an isolated engine per test, and workers.

Needs pytest-trio (``trio_mode = true``, or mark tests with ``@pytest.mark.trio``)::

    async def test_greet(iii_engine, iii_worker):
        server = await iii_worker(name="server")
        server.register_function("greet", lambda p: f"hi {p['name']}")
        await iii_engine.wait_function("greet")
        client = await iii_worker()
        assert await client.trigger("greet", {"name": "x"}) == "hi x"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from .._unwrap import open_nursery
from ..engine import Engine, open_engine
from ..worker import Worker, connect_worker

WorkerFactory = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def iii_engine() -> AsyncIterator[Engine]:
    """An engine on a free loopback port (:func:`iii_trio.open_engine`), stopped after the
    test."""
    async with open_engine(host="127.0.0.1", port=0) as engine:
        yield engine


@pytest.fixture
async def iii_worker(iii_engine: Engine) -> AsyncIterator[WorkerFactory]:
    """``await iii_worker(**options)`` connects a worker to ``iii_engine``; all are closed
    after the test. Options are :func:`iii_trio.connect_worker`'s. A failure to connect, or
    of a worker's own tasks, leaves as itself (never wrapped in an ``ExceptionGroup``)."""
    async with open_nursery() as nursery:

        async def serve(
            options: dict[str, Any],
            *,
            task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            async with connect_worker(**options) as worker:
                task_status.started(worker)
                await trio.sleep_forever()

        async def connect(**options: Any) -> Worker:
            options.setdefault("url", iii_engine.url)
            worker: Worker = await nursery.start(serve, options)
            return worker

        yield connect
        nursery.cancel_scope.cancel()
