"""A failed first connection raises one public ConnectError, never a group or a private error."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import iii_trio
from iii_trio.protocol import StreamChannelRef
from iii_trio.worker._channels import ChannelEndpoint


async def _first_connect_error(url: str, **options: Any) -> iii_trio.ConnectError:
    """What ``connect_worker`` raises, checked to be a bare ConnectError (and an IIIError)."""
    with trio.fail_after(10):
        with pytest.raises(iii_trio.ConnectError) as info:
            async with iii_trio.connect_worker(url, reconnect=False, **options):
                pass
    error = info.value
    assert isinstance(error, iii_trio.IIIError)
    assert not isinstance(error, BaseExceptionGroup)
    return error


async def _closed_port() -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return port


async def test_closed_port_is_unreachable() -> None:
    url = f"ws://127.0.0.1:{await _closed_port()}"
    error = await _first_connect_error(url)
    assert type(error) is iii_trio.EngineUnreachable
    assert error.url == url
    assert isinstance(error.__cause__, OSError)
    assert str(error).startswith(f"cannot reach the engine at {url}: connection refused")


async def test_missing_token_is_unauthorized() -> None:
    async with iii_trio.open_engine(host="127.0.0.1", port=0, token="s") as engine:
        error = await _first_connect_error(engine.url, token="")
    assert type(error) is iii_trio.Unauthorized
    assert (error.status, error.token_sent) == (401, False)
    assert "token missing" in str(error) and "$III_TOKEN" in str(error)
    assert "token=" in str(error)


async def test_wrong_token_is_unauthorized_and_never_shown() -> None:
    async with iii_trio.open_engine(host="127.0.0.1", port=0, token="s") as engine:
        in_header = await _first_connect_error(engine.url, token="wrong-secret")
        in_query = await _first_connect_error(f"{engine.url}/?token=wrong-secret", token="")
    for error in (in_header, in_query):
        assert type(error) is iii_trio.Unauthorized
        assert (error.status, error.token_sent) == (401, True)
        assert "token rejected" in str(error)
        assert "wrong-secret" not in str(error) and "wrong-secret" not in error.url
    assert in_query.url == f"{engine.url}/?token=***"


async def test_unknown_path_is_refused_with_its_status(iii_engine) -> None:
    error = await _first_connect_error(f"{iii_engine.url}/nope")
    assert type(error) is iii_trio.HandshakeRefused
    assert error.status == 404 and "no endpoint at /nope" in error.body
    assert "HTTP 404" in str(error)


async def test_in_memory_engine_refusals_are_the_same_errors() -> None:
    async with iii_trio.open_engine(port=0, token="s") as engine:
        error = await _first_connect_error(engine.url, dialer=engine.local_dialer, token="")
        assert type(error) is iii_trio.Unauthorized and not error.token_sent
    error = await _first_connect_error(engine.url, dialer=engine.local_dialer)
    assert type(error) is iii_trio.EngineUnreachable
    assert isinstance(error.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9", "use 'ws://127.0.0.1:9'"),
        ("https://example.com/x", "use 'wss://example.com/x'"),
        ("notaurl", "not an engine URL: 'notaurl': expected ws://HOST:PORT"),
        ("ws://", "not an engine URL: 'ws://': it has no host"),
        ("ws://127.0.0.1:99999", "the port is not a number from 0 to 65535"),
        ("http://127.0.0.1:9/?token=secret", "use 'ws://127.0.0.1:9/?token=***'"),
    ],
)
async def test_bad_urls_are_value_errors(url: str, message: str) -> None:
    with trio.fail_after(10), pytest.raises(ValueError) as info:
        async with iii_trio.connect_worker(url, reconnect=False):
            pass
    assert message in str(info.value)
    assert "secret" not in str(info.value)


async def test_channel_socket_401_says_missing_or_rejected() -> None:
    async with (
        iii_trio.open_engine(host="127.0.0.1", port=0, token="s") as engine,
        iii_trio.connect_worker(engine.url, token="s") as worker,
    ):
        channel = await worker.create_channel()
        ref: StreamChannelRef = channel.reader_ref
        reasons = {}
        for name, headers in (("missing", ()), ("rejected", (("Authorization", "Bearer no"),))):
            endpoint = ChannelEndpoint(engine.url, headers)
            with trio.fail_after(10), pytest.raises(iii_trio.ChannelRefused) as info:
                await endpoint.connect(ref)
            assert info.value.status == 401
            reasons[name] = info.value.reason
        await channel.writer.aclose()
        await channel.reader.aclose()
    assert "token missing" in reasons["missing"]
    assert "token rejected" in reasons["rejected"]
    assert all(ref.access_key not in reason for reason in reasons.values())
