"""Download: the caller hands a writer ref to a function, which streams a file back.

    iii-trio engine &
    python examples/download.py

The caller creates the channel and keeps the reader; the "exporter" worker gets a live
ChannelWriter in place of the writer ref and writes into it. When the handler returns, the SDK
ends the stream cleanly; had it raised, the caller's reader would get ChannelAborted instead.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

import trio

import iii_trio

sys.path.insert(0, os.path.dirname(__file__))
from _common import engine_url

REPORT = b"id,value\n" + b"".join(f"{i},{i * i}\n".encode() for i in range(200_000))


async def export(payload: dict[str, object]) -> dict[str, object]:
    writer = payload["writer"]
    assert isinstance(writer, iii_trio.ChannelWriter)
    await writer.send_all(REPORT)
    return {"rows": REPORT.count(b"\n") - 1}


async def main(url: str) -> None:
    target = os.path.join(tempfile.mkdtemp(), "report.csv")
    async with iii_trio.connect_worker(url, name="exporter") as exporter:
        exporter.register_function("reports::export", export)
        await exporter.sync()  # the engine has the registration before anyone calls
        async with iii_trio.connect_worker(url, name="downloader") as client:
            async with client.open_channel() as channel, trio.open_nursery() as nursery:
                result: dict[str, object] = {}

                async def call() -> None:
                    result.update(
                        await client.trigger("reports::export", {"writer": channel.writer_ref})
                    )

                nursery.start_soon(call)
                size = await iii_trio.receive_file(channel.reader, target)
    with open(target, "rb") as file:
        ok = hashlib.sha256(file.read()).digest() == hashlib.sha256(REPORT).digest()
    print(f"downloaded {size} bytes, {result['rows']} rows -> {target}")
    print("match" if ok else "MISMATCH")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    trio.run(main, engine_url(__doc__ or ""))
