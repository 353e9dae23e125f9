"""Progress: a long job reports progress as text messages on the channel that carries its
result.

    iii-trio engine &
    python examples/progress.py

Text messages travel in order with the data, so "100%" arrives right before the last bytes.
"""

from __future__ import annotations

import json
import os
import sys

import trio

import iii_trio

sys.path.insert(0, os.path.dirname(__file__))
from _common import engine_url

STEPS = 10


async def long_job(payload: dict[str, object]) -> str:
    writer = payload["writer"]
    assert isinstance(writer, iii_trio.ChannelWriter)
    for step in range(1, STEPS + 1):
        await trio.lowlevel.checkpoint()  # the real work would go here
        await writer.send_message(json.dumps({"step": step, "of": STEPS}))
        await writer.send_all(f"result part {step}\n".encode())
    return "done"


async def main(url: str) -> None:
    async with iii_trio.connect_worker(url, name="jobs") as jobs:
        jobs.register_function("jobs::long", long_job)
        await jobs.sync()  # the engine has the registration before anyone calls
        async with iii_trio.connect_worker(url, name="watcher") as client:
            seen: list[int] = []

            def on_progress(text: str) -> None:
                update = json.loads(text)
                seen.append(update["step"])
                print(f"progress: {100 * update['step'] // update['of']}%")

            async with client.open_channel() as channel, trio.open_nursery() as nursery:
                nursery.start_soon(client.trigger, "jobs::long", {"writer": channel.writer_ref})
                channel.reader.on_message(on_progress)
                output = await channel.reader.read_all()
    print(output.decode().rstrip())
    if seen != list(range(1, STEPS + 1)) or output.count(b"\n") != STEPS:
        raise SystemExit(1)


if __name__ == "__main__":
    trio.run(main, engine_url(__doc__ or ""))
