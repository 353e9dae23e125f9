"""A worker process built with our SDK, for tests that need a second process to kill or to
talk to. Prints one JSON line when ready, then runs until killed or stdin closes.

    python tests/e2e/worker_proc.py URL serve NAME
    python tests/e2e/worker_proc.py URL write REF_JSON     # write forever into a writer ref
    python tests/e2e/worker_proc.py URL read REF_JSON      # read forever from a reader ref
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import trio

import iii_trio


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def wait_stdin_eof() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with stdin:
        while await stdin.receive_some():
            pass


async def main(url: str, mode: str, arg: str) -> None:
    async with iii_trio.connect_worker(url, name=f"proc-{mode}") as worker:
        if mode == "serve":

            async def echo(payload: Any) -> Any:
                return {"echo": payload, "pid": os.getpid()}

            async def hang(payload: Any) -> None:
                say(event="hanging")
                await trio.sleep_forever()

            worker.register_function(f"{arg}::echo", echo)
            worker.register_function(f"{arg}::hang", hang)
            # Our own round trip proves the engine has our registrations.
            await worker.trigger(f"{arg}::echo", {"probe": True})
            say(event="ready", pid=os.getpid())
            await wait_stdin_eof()
        elif mode == "write":
            writer = worker.channel_writer(json.loads(arg))
            await writer.send_all(b"w" * 65536)
            say(event="writing", pid=os.getpid())
            while True:
                await writer.send_all(b"w" * 65536)
        elif mode == "read":
            reader = worker.channel_reader(json.loads(arg))
            await reader.receive_some()
            say(event="reading", pid=os.getpid())
            await wait_stdin_eof()  # then stop reading, without closing, until killed


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
