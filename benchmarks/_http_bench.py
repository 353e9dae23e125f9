"""Benchmark 6: the engine's HTTP server (``http`` triggers), each against a same-run baseline
(a plain h11 server on trio doing the same work without the engine, no channels, no worker):

* requests/s for a small JSON route (``POST``, echoed), 8 keep-alive connections;
* upload throughput for one large streamed body read to its end by the handler.

Servers and the client are separate processes (see ``_http_proc``); the engine's worker runs in
the engine's process (``Engine.local_dialer``), so the ratio is what routing a request through
the engine, its channels and a worker costs over answering it in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import MiB
from ._harness import Group, Row

if TYPE_CHECKING:
    from ._harness import Deadline, Progress
    from ._suite import Config

MB = 1e6


def _server(group: Group, kind: str) -> str:
    child = group.start(f"http-{kind}", "_http_proc", "serve", kind)
    ready = child.read(30)
    url: str = ready["url"]
    return url


def _json_rate(group: Group, url: str, requests: int) -> float:
    child = group.start("http-client", "_http_proc", "json", url, "--requests", str(requests))
    got = child.read(300)
    return float(got["requests"]) / float(got["elapsed"])


def _upload_rate(group: Group, url: str, size: int) -> float:
    child = group.start("http-client", "_http_proc", "upload", url, "--size", str(size))
    got = child.read(600)
    return size / MB / float(got["elapsed"])


def bench_http(config: Config, progress: Progress, deadline: Deadline) -> list[Row]:
    requests = max(400, config.calls // 5)
    size = max(config.size, 64 * MiB)
    rates: dict[str, list[float]] = {"engine": [], "baseline": []}
    uploads: dict[str, list[float]] = {"engine": [], "baseline": []}
    for rep in range(config.reps):
        deadline.check(f"benchmark 6, repetition {rep + 1}")
        # Alternating order, so that whichever side goes first has no edge over the run.
        for kind in ("baseline", "engine") if rep % 2 == 0 else ("engine", "baseline"):
            with Group() as group:
                url = _server(group, kind)
                _json_rate(group, url, requests // 4)  # warm-up
                rate = _json_rate(group, url, requests)
                upload = _upload_rate(group, url, size)
            rates[kind].append(rate)
            uploads[kind].append(upload)
            progress(f"  6. rep {rep + 1} {kind:>8}: {rate:7.0f} req/s, {upload:7.0f} MB/s upload")
    return [
        Row(
            "6",
            "6 HTTP trigger, small JSON route, 8 connections",
            "req/s",
            rates["engine"],
            rates["baseline"],
            "plain h11 server",
        ),
        Row(
            "6",
            f"6 HTTP trigger, streamed upload of {size // MiB} MiB",
            "MB/s",
            uploads["engine"],
            uploads["baseline"],
            "plain h11 server",
        ),
    ]
