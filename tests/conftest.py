from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    # The "explain" phase trips an internal assertion in some Hypothesis versions.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


import pytest  # noqa: E402

from tests.helpers import LOCAL_TRANSPORT, RawClient  # noqa: E402


@pytest.fixture
async def raw(iii_engine):
    """``await raw(url=None, path="/")``: a raw protocol client (closed after the test). The
    url defaults to the ``iii_engine`` fixture's."""
    clients: list[RawClient] = []

    async def connect(url: str | None = None, path: str = "/", **kwargs) -> RawClient:
        if url is None:
            url = iii_engine.url
        client = await RawClient.connect(url, path, **kwargs)
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            await client.ws.abort()


if LOCAL_TRANSPORT:
    # Run the suite's workers over in-process message sockets (Engine.local_dialer) instead
    # of loopback TCP: the same tests then check that transport end to end.
    import trio

    from iii_trio import Engine, Worker, connect_worker

    @pytest.fixture
    async def iii_worker(iii_engine: Engine):
        async with trio.open_nursery() as nursery:

            async def serve(options, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
                async with connect_worker(**options) as worker:
                    task_status.started(worker)
                    await trio.sleep_forever()

            async def connect(**options) -> Worker:
                options.setdefault("url", iii_engine.url)
                if options["url"] == iii_engine.url:
                    options.setdefault("dialer", iii_engine.local_dialer)
                worker: Worker = await nursery.start(serve, options)
                return worker

            yield connect
            nursery.cancel_scope.cancel()
