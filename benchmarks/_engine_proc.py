"""An iii_trio engine in its own process, for the benchmarks.

usage: python -m benchmarks._engine_proc [--cprofile FILE] [--no-tune-allocator]

Listens on 127.0.0.1, port 0; prints ``{"event": "ready", "url": ..., "pid": ...}`` once
listening; stops at EOF on stdin (or SIGINT/SIGTERM). With ``--cprofile`` the whole run is
profiled and the stats are written to FILE at exit. Like the ``iii-trio engine`` command, it
calls :func:`iii_trio.tune_allocator` first, unless told not to.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import logging
import os
import signal
import sys
import threading
import time
from functools import partial
from typing import Any

import trio

import iii_trio

from ._common import emit


async def _main(profile: cProfile.Profile | None) -> None:
    token = trio.lowlevel.current_trio_token()
    async with trio.open_nursery() as nursery:
        engine: iii_trio.Engine = await nursery.start(
            partial(iii_trio.serve_engine, host="127.0.0.1", port=0)
        )
        emit({"event": "ready", "url": engine.url, "pid": os.getpid()})

        def wait_stdin() -> None:
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(nursery.cancel_scope.cancel)

        threading.Thread(target=wait_stdin, daemon=True).start()
        if profile is not None:
            profile.enable()
        try:
            await trio.sleep_forever()
        finally:
            if profile is not None:
                profile.disable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cprofile", help="write cProfile stats of the run to this file")
    parser.add_argument(
        "--no-tune-allocator",
        dest="tune_allocator",
        action="store_false",
        help="keep glibc's malloc defaults (the iii-trio engine command tunes them)",
    )
    args = parser.parse_args()
    if args.tune_allocator:
        iii_trio.tune_allocator()  # as ``iii-trio engine`` does
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # CPU time of the (single) trio thread, not wall time: on a shared 2-core machine the wall
    # clock mostly measures waiting for a CPU.
    profile = cProfile.Profile(time.thread_time) if args.cprofile else None
    try:
        trio.run(_main, profile)
    except KeyboardInterrupt:
        pass
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
