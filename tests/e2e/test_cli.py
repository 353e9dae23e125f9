"""The iii-trio command line against a real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import attrs
import pytest
import trio

import iii_trio
import iii_trio._cli


def _env(**settings: str) -> dict[str, str]:
    """This process's environment without $III_URL, $III_TOKEN, ..., plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("III_")}
    env.update(settings)
    return env


async def _cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, "-m", "iii_trio", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_env() if env is None else env,
        )


async def test_functions_lists_every_page() -> None:
    # An answer carries at most max_list_answer bytes of rows; the command follows "next".
    async with (
        iii_trio.open_engine(port=0, max_list_answer=1500) as engine,
        iii_trio.connect_worker(engine.url, name="many") as worker,
    ):
        for n in range(10):
            worker.register_function(f"many::f{n}", lambda p: p, metadata={"m": "x" * 150})
        await worker.sync()
        first = await worker.trigger("engine::functions::list", {"prefix": "many::"})
        assert "next" in first  # the listing really is paged
        done = await _cli("functions", "--json", "--url", engine.url)
    assert done.returncode == 0, done.stderr
    listed = {row["function_id"] for row in json.loads(done.stdout)}
    assert listed == {f"many::f{n}" for n in range(10)}


async def test_call_and_listings(iii_engine, iii_worker) -> None:
    server = await iii_worker(name="cli-server")
    server.register_function("cli::add", lambda p: p["a"] + p["b"], description="adds")
    await iii_engine.wait_function("cli::add")
    url = iii_engine.url
    done = await _cli("call", "cli::add", "--json", '{"a": 2, "b": 3}', "--url", url)
    assert done.returncode == 0 and json.loads(done.stdout) == 5
    done = await _cli("call", "cli::missing", "--url", url)
    assert done.returncode == 1 and b"function_not_found" in done.stderr
    done = await _cli("call", "cli::add", "--json", "{not json", "--url", url)
    assert done.returncode == 2
    done = await _cli("functions", "--url", url)
    assert done.returncode == 0 and b"cli::add" in done.stdout and b"adds" in done.stdout
    done = await _cli("workers", "--json", "--url", url)
    assert "cli-server" in {w["name"] for w in json.loads(done.stdout)}
    done = await _cli("channels", "--url", url)
    assert done.returncode == 0
    done = await _cli("functions", "--url", "ws://127.0.0.1:9")
    assert done.returncode == 3 and b"cannot reach the engine" in done.stderr


async def test_send_and_receive_files(iii_engine, iii_worker, tmp_path) -> None:
    server = await iii_worker(name="files")
    store: dict[str, bytes] = {}

    async def put(payload):
        store[payload["name"]] = await payload["reader"].read_all()
        return {"stored": payload["name"], "size": len(store[payload["name"]])}

    async def get(payload):
        await payload["writer"].send_all(store[payload["name"]])

    server.register_function("files::put", put)
    server.register_function("files::get", get)
    await iii_engine.wait_function("files::get")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    done = await _cli("send", str(source), "--to", "files::put", "--quiet", "--url", iii_engine.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"stored": "data.bin", "size": source.stat().st_size}
    target = tmp_path / "back.bin"
    done = await _cli(
        "receive",
        "--from",
        "files::get",
        "--json",
        '{"name": "data.bin"}',
        "-o",
        str(target),
        "--quiet",
        "--url",
        iii_engine.url,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == source.read_bytes()


async def test_demo_checks_its_own_transfer() -> None:
    done = await _cli("demo", "--size-mb", "8", "--quiet")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    sent = next(line for line in lines if line.startswith("sent")).split()[-1]
    received = next(line for line in lines if line.startswith("received")).split()[4]
    assert sent == received


async def test_engine_command_serves_and_stops_on_sigterm() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "iii_trio", "engine", "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        with trio.fail_after(30):
            banner = b""
            while b"Ctrl-C" not in banner:
                chunk = await proc.stdout.receive_some()
                assert chunk, banner
                banner += chunk
            url = banner.split(b"listening on ")[1].split()[0].decode()
            assert b"token: off" in banner
            async with iii_trio.connect_worker(url) as worker:
                assert await worker.trigger("engine::functions::list", {}) == {"functions": []}
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()


async def test_engine_command_refuses_bad_limits() -> None:
    done = await _cli("engine", "--port", "0", "--channel-buffer", "0")
    assert done.returncode == 2
    assert b"channel_buffer_bytes must be > 0" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "bad", [{"port": 70000}, {"channel_memory_limit": -1}, {"invocation_timeout": float("nan")}]
)
def test_engine_config_validates(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        iii_trio.EngineConfig(**bad)


# --- bad input: one line on stderr, the documented exit code, never a traceback -------------

TOKEN = "s3cret-token"
USAGE, REMOTE, CONNECT = 2, 1, 3

# argv (with {url}, {port}, {closed}, {tmp}, {in} filled in), exit code, part of the one
# stderr line, and extra environment. {url} is an engine that needs TOKEN and serves
# cli::slow (never answers) and cli::echo; {port} is its port, {closed} a closed one.
BAD_INPUTS = [
    # the command line itself
    (["frob"], USAGE, "invalid choice: 'frob'", {}),
    ([], USAGE, "the following arguments are required: COMMAND", {}),
    (["call"], USAGE, "the following arguments are required: function", {}),
    (["send", "{in}"], USAGE, "the following arguments are required: --to", {}),
    (["receive", "--from", "f"], USAGE, "required: -o/--output", {}),
    (["call", "f", "--frobnicate"], USAGE, "unrecognized arguments: --frobnicate", {}),
    (["--log-level", "LOUD", "functions"], USAGE, "invalid choice: 'LOUD'", {}),
    (["functions"], USAGE, "$III_LOG_LEVEL must be one of", {"III_LOG_LEVEL": "loud"}),
    # URLs
    (["call", "greet", "--url", "http://127.0.0.1:{port}"], USAGE, "use 'ws://127.0.0.1:", {}),
    (["call", "greet", "--url", "https://example.com"], USAGE, "use 'wss://example.com'", {}),
    (["call", "greet", "--url", "notaurl"], USAGE, "not an engine URL: 'notaurl'", {}),
    (["call", "greet", "--url", "ws://127.0.0.1:99999"], USAGE, "port is not a number", {}),
    (["call", "greet", "--url", "ws://"], USAGE, "it has no host", {}),
    (["functions"], USAGE, "$III_URL: engine URLs are WebSocket URLs", {"III_URL": "http://x"}),
    # JSON
    (["call", "greet", "--json", "{not json"], USAGE, "--json: not valid JSON", {}),
    (["send", "{in}", "--to", "f", "--json", "[1]"], USAGE, "must be a JSON object", {}),
    (["send", "{in}", "--to", "f", "--json", "nope"], USAGE, "--json: not valid JSON", {}),
    (["receive", "--from", "f", "-o", "{tmp}/o", "--json", '"x"'], USAGE, "JSON object", {}),
    (["send", "{in}", "--to", "f", "--json", '{"reader": 1}'], USAGE, "must not set 'reader'", {}),
    (
        ["receive", "--from", "f", "-o", "{tmp}/o", "--json", '{"writer": 1}'],
        USAGE,
        "must not set 'writer'",
        {},
    ),
    # timeouts and sizes
    (["call", "greet", "--timeout", "-5"], USAGE, "--timeout: must be a number of seconds > 0", {}),
    (["call", "greet", "--timeout", "0"], USAGE, "must be a number of seconds > 0, not '0'", {}),
    (["call", "greet", "--timeout", "nan"], USAGE, "not 'nan'", {}),
    (["call", "greet", "--timeout", "inf"], USAGE, "not 'inf'", {}),
    (["send", "{in}", "--to", "f", "--timeout", "0"], USAGE, "--timeout: must be", {}),
    (["receive", "--from", "f", "-o", "{tmp}/o", "--timeout", "x"], USAGE, "--timeout: must", {}),
    (["demo", "--size-mb", "0"], USAGE, "--size-mb: must be a number of megabytes > 0", {}),
    (["demo", "--size-mb", "-1"], USAGE, "--size-mb: must be a number of megabytes > 0", {}),
    (["demo", "--size-mb", "1e-9"], USAGE, "must be at least one byte", {}),
    (["engine", "--port", "0", "--channel-buffer", "0"], USAGE, "channel_buffer_bytes", {}),
    (["engine", "--port", "70000"], USAGE, "port", {}),
    # local files, checked before connecting
    (
        ["receive", "--from", "f", "-o", "/nonexistent/dir/x"],
        USAGE,
        "local file '/nonexistent/dir/x': cannot write it: directory '/nonexistent/dir' "
        "does not exist",
        {},
    ),
    (["receive", "--from", "f", "-o", "{tmp}"], USAGE, "cannot write it: it is a directory", {}),
    (
        ["send", "/nonexistent/file", "--to", "f"],
        USAGE,
        "local file '/nonexistent/file': cannot read it: no such file or directory",
        {},
    ),
    (["send", "{tmp}", "--to", "f"], USAGE, "cannot read it: it is a directory", {}),
    (["send", "", "--to", "f"], USAGE, "the file to send must be named", {}),
    (["receive", "--from", "f", "-o", ""], USAGE, "-o/--output must name a file", {}),
    (["send", "/dev/null", "--to", "f"], USAGE, "cannot read it: not a regular file", {}),
    # cannot connect
    (
        ["functions", "--url", "ws://127.0.0.1:{closed}"],
        CONNECT,
        "cannot reach the engine at ws://127.0.0.1:",
        {},
    ),
    (["call", "cli::echo", "--url", "{url}"], CONNECT, "token missing", {}),
    (["call", "cli::echo", "--url", "{url}"], CONNECT, "pass --token or set $III_TOKEN", {}),
    (["call", "cli::echo", "--url", "{url}", "--token", "wrong"], CONNECT, "token rejected", {}),
    (["functions", "--url", "{url}"], CONNECT, "token rejected", {"III_TOKEN": "wrong"}),
    (["functions", "--url", "{url}/?token=wrong"], CONNECT, "{url}/?token=*** (HTTP 401)", {}),
    (["send", "{in}", "--to", "f", "--url", "{url}"], CONNECT, "token missing", {}),
    (["receive", "--from", "f", "-o", "{tmp}/o", "--url", "{url}"], CONNECT, "token missing", {}),
    (["functions", "--url", "{url}/nope", "--token", TOKEN], CONNECT, "HTTP 404", {}),
    # the engine or the function answered with an error
    (
        ["call", "cli::missing", "--url", "{url}", "--token", TOKEN],
        REMOTE,
        "function_not_found",
        {},
    ),
    (
        ["call", "cli::slow", "--url", "{url}", "--token", TOKEN, "--timeout", "0.2"],
        REMOTE,
        "invocation_timeout: no answer from 'cli::slow' within 0.2s (a longer --timeout may help)",
        {},
    ),
    (
        ["send", "{in}", "--to", "cli::missing", "--url", "{url}"],
        REMOTE,
        "function_not_found",
        {"III_TOKEN": TOKEN},
    ),
    (
        ["send", "{in}", "--to", "cli::slow", "--url", "{url}", "--timeout", "0.2"],
        REMOTE,
        "invocation_timeout",
        {"III_TOKEN": TOKEN},
    ),
    (
        ["receive", "--from", "cli::missing", "-o", "{tmp}/o", "--url", "{url}"],
        REMOTE,
        "function_not_found",
        {"III_TOKEN": TOKEN},
    ),
    # the engine cannot listen
    (["engine", "--port", "{port}", "--log-level", "WARNING"], REMOTE, "127.0.0.1:{port}", {}),
    (["engine", "--port", "{port}", "--log-level", "WARNING"], REMOTE, "already in use", {}),
]


@attrs.define
class _Served:
    engine: iii_trio.Engine
    slow_called: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return self.engine.url


@pytest.fixture
async def token_engine():
    """An engine that needs TOKEN, serving cli::slow (never answers), cli::echo and
    cli::store (reads the channel in ``reader``, returns its ``name`` and size)."""
    async with (
        iii_trio.open_engine(host="127.0.0.1", port=0, token=TOKEN) as engine,
        iii_trio.connect_worker(engine.url, token=TOKEN) as worker,
    ):
        served = _Served(engine)

        async def slow(payload):
            served.slow_called.set()
            await trio.sleep_forever()

        async def store(payload):
            data = await payload["reader"].read_all()
            return {"name": payload.get("name"), "size": len(data), "extra": payload.get("extra")}

        worker.register_function("cli::slow", slow)
        worker.register_function("cli::echo", lambda payload: payload)
        worker.register_function("cli::store", store)
        await engine.wait_function("cli::store")
        yield served


async def _closed_port() -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return port


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


@pytest.mark.parametrize(
    ("argv", "code", "message", "env"),
    [pytest.param(*case, id=" ".join(case[0]) or "(nothing)") for case in BAD_INPUTS],
)
async def test_bad_input_is_one_line_and_an_exit_code(
    token_engine, tmp_path, monkeypatch, capsys, argv, code, message, env
) -> None:
    (tmp_path / "in.bin").write_bytes(b"some bytes")
    values = {
        "url": token_engine.url,
        "port": token_engine.url.rsplit(":", 1)[1],
        "closed": str(await _closed_port()),
        "tmp": str(tmp_path),
        "in": str(tmp_path / "in.bin"),
    }
    args = [_fill(arg, values) for arg in argv]
    if code == USAGE:
        # In this process, where running anything (let alone connecting) fails the test:
        # usage errors are found before, whether an engine runs or not.
        returncode, stderr = _main_without_running(args, env, monkeypatch, capsys)
    else:
        done = await _cli(*args, timeout=30, env=_env(**env))
        returncode, stderr = done.returncode, done.stderr.decode()
    assert "Traceback" not in stderr
    assert stderr.splitlines() == [stderr.strip()], stderr  # exactly one line
    assert stderr.startswith("error: ") and _fill(message, values) in stderr, stderr
    assert returncode == code, stderr
    assert TOKEN not in stderr and "wrong" not in stderr.replace("/?token=***", "")
    assert not (tmp_path / "o").exists()  # nothing half-written is left behind


def _main_without_running(
    argv: list[str], env: dict[str, str], monkeypatch, capsys
) -> tuple[int, str]:
    def run(*args: object) -> None:
        raise AssertionError("a usage error reached trio.run")

    for name in [name for name in os.environ if name.startswith("III_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(trio, "run", run)
    capsys.readouterr()
    returncode = iii_trio._cli.main(argv)
    return returncode, capsys.readouterr().err


async def test_void_call_says_it_was_accepted(token_engine) -> None:
    done = await _cli(
        "call", "cli::echo", "--void", "--url", token_engine.url, env=_env(III_TOKEN=TOKEN)
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"accepted: void call to cli::echo (no result is awaited)\n"
    assert done.stdout == b""


async def test_send_fills_only_the_fields_the_user_left_out(token_engine, tmp_path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 1000)
    sent = await _cli(
        "send", str(source), "--to", "cli::store", "--url", token_engine.url, "--token", TOKEN
    )
    assert json.loads(sent.stdout) == {"name": "data.bin", "size": 1000, "extra": None}
    sent = await _cli(
        "send",
        str(source),
        "--to",
        "cli::store",
        "--json",
        '{"name": "mine", "extra": 1}',
        "--url",
        token_engine.url,
        "--token",
        TOKEN,
    )
    assert json.loads(sent.stdout) == {"name": "mine", "size": 1000, "extra": 1}


@pytest.mark.parametrize(
    ("flags", "drawn"),
    [((), False), (("--progress",), True), (("--no-progress",), False), (("--quiet",), False)],
)
async def test_progress_only_on_a_terminal_unless_asked(token_engine, tmp_path, flags, drawn):
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    done = await _cli(
        "send",
        str(source),
        "--to",
        "cli::store",
        *flags,
        "--url",
        token_engine.url,
        env=_env(III_TOKEN=TOKEN),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == 3 * 1024 * 1024
    if drawn:  # stderr is a pipe here: drawn only when asked, and its line is ended
        assert done.stderr.startswith(b"\rsending data.bin [") and done.stderr.endswith(b"\n")
        assert b"3.1/3.1 MB" in done.stderr.splitlines()[-1]
    else:
        assert done.stderr == b""


async def test_ctrl_c_exits_130_with_one_line(token_engine) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "iii_trio", "call", "cli::slow", "--url", token_engine.url],
        stderr=subprocess.PIPE,
        env=_env(III_TOKEN=TOKEN),
    )
    assert proc.stderr is not None
    try:
        with trio.fail_after(30):
            await token_engine.slow_called.wait()
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 130
            stderr = b""
            while chunk := await proc.stderr.receive_some():
                stderr += chunk
        assert stderr == b"error: interrupted\n"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stderr.aclose()
