"""The baselines: plain blocking sockets, no framing, no event loop.

usage: python -m benchmarks._raw ROLE [options]

Bytes (benchmarks 1 and 4): ``relay`` listens and prints its port; ``reader`` and ``writer``
connect to it (announcing themselves with one byte, ``R`` or ``W``); the relay copies the
writer's bytes to the reader with a ``recv_into``/``sendall`` loop on a ``--chunk``-sized
buffer until the writer shuts down its side, then shuts down the reader's. The writer starts
on ``go`` (a line on stdin) and prints when it started; the reader prints what it got and when
the stream ended.

JSON calls (benchmark 3): ``jrelay`` listens; ``jcaller`` (``C``) and ``jworker`` (``K``)
connect. The relay parses each newline-terminated JSON request, gives it its own id,
forwards it to the worker, and routes the reply back under the caller's id: the same
decode-route-encode work an engine does, with one thread per direction. The caller takes
commands on stdin (``{"cmd": "latency"|"throughput", ...}``) and answers each with a line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import sys
import threading
import time
from typing import Any

from ._common import Verifier, chunks, emit, now

HOST = "127.0.0.1"


def _listen() -> socket.socket:
    server = socket.create_server((HOST, 0))
    emit({"event": "ready", "port": server.getsockname()[1]})
    return server


def _accept_roles(server: socket.socket, roles: str) -> dict[str, socket.socket]:
    conns: dict[str, socket.socket] = {}
    while len(conns) < len(roles):
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        role = conn.recv(1).decode()
        if len(role) != 1 or role not in roles or role in conns:
            conn.close()
            continue
        conns[role] = conn
    return conns


def _connect(port: int, role: bytes) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(role)
    return sock


# --- bytes -------------------------------------------------------------------------------


def relay(args: argparse.Namespace) -> None:
    server = _listen()
    conns = _accept_roles(server, "WR")
    source, sink = conns["W"], conns["R"]
    buf = bytearray(args.chunk)
    view = memoryview(buf)
    total = 0
    while True:
        n = source.recv_into(buf)
        if not n:
            break
        sink.sendall(view[:n])
        total += n
    sink.shutdown(socket.SHUT_WR)
    sink.recv(1)  # the reader closes once it has everything
    sink.close()
    source.close()
    emit({"event": "done", "bytes": total})
    sys.stdin.read()  # stay alive (for the harness's CPU reading) until stdin closes


def reader(args: argparse.Namespace) -> None:
    sock = _connect(args.port, b"R")
    emit({"event": "ready"})
    verifier = Verifier(args.chunk)
    buf = bytearray(args.chunk)
    view = memoryview(buf)
    rate = args.rate * 1e6 if args.rate else 0.0
    start = 0.0
    while True:
        n = sock.recv_into(buf)
        if not n:
            break
        if rate:
            if verifier.size == 0:
                start = now()
            ahead = start + (verifier.size + n) / rate - now()
            if ahead > 0:
                time.sleep(ahead)
        verifier.feed(view[:n])
    t_eof = now()
    sock.close()
    emit({"event": "result", "t_eof": t_eof, **verifier.report()})


def writer(args: argparse.Namespace) -> None:
    sock = _connect(args.port, b"W")
    data = chunks(args.size, args.chunk)
    emit({"event": "ready"})
    sys.stdin.readline()
    t0 = now()
    for piece in data:
        sock.sendall(piece)
    sock.shutdown(socket.SHUT_WR)
    t_sent = now()
    sock.recv(1)
    sock.close()
    emit({"event": "result", "t0": t0, "t_sent": t_sent})


# --- JSON calls ----------------------------------------------------------------------------


class LineBuffer:
    """Splits received bytes into newline-terminated messages (no I/O)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Every message ``data`` completes (none if it ends mid-message)."""
        self._buffer += data
        if b"\n" not in data:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        return lines


def join_lines(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


class Router:
    """The relay's work per message: parse, re-id towards the worker, route the reply back
    under the caller's id, re-encode. Shared by this relay and ``_trio_relay``."""

    def __init__(self) -> None:
        self._routes: dict[int, str] = {}
        self._ids = itertools.count()

    def calls(self, lines: list[bytes]) -> list[bytes]:
        out = []
        for line in lines:
            msg = json.loads(line)
            target = next(self._ids)
            self._routes[target] = msg["id"]
            call = {"type": "invoke", "id": target, "fn": msg["fn"], "data": msg["data"]}
            out.append(json.dumps(call).encode())
        return out

    def results(self, lines: list[bytes]) -> list[bytes]:
        out = []
        for line in lines:
            msg = json.loads(line)
            origin = self._routes.pop(msg["id"])
            result = {"type": "result", "id": origin, "result": msg["result"]}
            out.append(json.dumps(result).encode())
        return out


class _LineSocket:
    """Newline-delimited messages over a blocking socket: ``receive`` returns every complete
    line that one ``recv`` made available (at least one), ``send`` writes many in one call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lines = LineBuffer()

    def receive(self) -> list[bytes]:
        while True:
            data = self.sock.recv(65536)
            if not data:
                return []
            if lines := self._lines.feed(data):
                return lines

    def send(self, lines: list[bytes]) -> None:
        self.sock.sendall(join_lines(lines))


def jrelay(args: argparse.Namespace) -> None:
    server = _listen()
    conns = _accept_roles(server, "CK")
    caller, worker = _LineSocket(conns["C"]), _LineSocket(conns["K"])
    router = Router()

    def forward_calls() -> None:
        while lines := caller.receive():
            worker.send(router.calls(lines))
        worker.sock.shutdown(socket.SHUT_WR)

    def forward_results() -> None:
        while lines := worker.receive():
            caller.send(router.results(lines))
        caller.sock.shutdown(socket.SHUT_WR)

    threads = [threading.Thread(target=forward_calls), threading.Thread(target=forward_results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def jworker(args: argparse.Namespace) -> None:
    conn = _LineSocket(_connect(args.port, b"K"))
    emit({"event": "ready"})
    while lines := conn.receive():
        out = []
        for line in lines:
            msg = json.loads(line)
            result = {"ok": True, "echo": msg["data"]["msg"]}
            out.append(json.dumps({"type": "result", "id": msg["id"], "result": result}).encode())
        conn.send(out)


def _request(n: int) -> bytes:
    payload = {"msg": "benchmark payload of about one hundred bytes", "n": n}
    msg = {"type": "invoke", "id": f"call-{n:012d}", "fn": "bench::echo", "data": payload}
    return json.dumps(msg).encode()


def _check_replies(lines: list[bytes]) -> None:
    for line in lines:
        if json.loads(line)["result"]["ok"] is not True:
            raise AssertionError(f"bad reply {line!r}")


def jcaller(args: argparse.Namespace) -> None:
    conn = _LineSocket(_connect(args.port, b"C"))
    emit({"event": "ready"})
    counter = itertools.count()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "latency":
            for _ in range(cmd["warmup"]):
                conn.send([_request(next(counter))])
                _check_replies(conn.receive())
            samples = []
            start = time.perf_counter()
            for _ in range(cmd["n"]):
                t = time.perf_counter()
                conn.send([_request(next(counter))])
                replies = conn.receive()
                samples.append(time.perf_counter() - t)
                _check_replies(replies)
            elapsed = time.perf_counter() - start
            emit({"event": "result", **latency_summary(samples, elapsed)})
        elif cmd["cmd"] == "throughput":
            # A window of `inflight` calls: each batch of replies is answered by as many new
            # calls, sent in one write.
            inflight, total = cmd["inflight"], cmd["n"]
            start = time.perf_counter()
            first = min(inflight, total)
            conn.send([_request(next(counter)) for _ in range(first)])
            sent, done = first, 0
            while done < total:
                replies = conn.receive()
                if not replies:
                    raise ConnectionError("relay closed the connection")
                _check_replies(replies)
                done += len(replies)
                more = min(len(replies), total - sent)
                if more:
                    conn.send([_request(next(counter)) for _ in range(more)])
                    sent += more
            elapsed = time.perf_counter() - start
            emit({"event": "result", "calls": done, "elapsed": elapsed, "rate": done / elapsed})
        else:
            emit({"event": "error", "message": f"unknown command {cmd!r}"})


def latency_summary(samples: list[float], elapsed: float) -> dict[str, Any]:
    """p50/p99 in microseconds and the call rate of a 1-in-flight run."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "calls": len(samples),
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": p99 * 1e6,
        "elapsed": elapsed,
        "rate": len(samples) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "role", choices=["relay", "reader", "writer", "jrelay", "jworker", "jcaller"]
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=64 * 1024)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="reader: at most this many MB/s")
    args = parser.parse_args()
    roles = {
        "relay": relay,
        "reader": reader,
        "writer": writer,
        "jrelay": jrelay,
        "jworker": jworker,
        "jcaller": jcaller,
    }
    roles[args.role](args)


if __name__ == "__main__":
    main()
