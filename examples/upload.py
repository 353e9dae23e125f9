"""Upload: a client streams a file to a function that processes it.

    iii-trio engine &           # in another terminal
    python examples/upload.py

The "processor" worker registers files::checksum, which gets a live ChannelReader in place of
the reader ref in its payload. The client creates the channel, passes the reader ref in an
ordinary trigger payload, and writes the file into its end.
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


async def checksum(payload: dict[str, object]) -> dict[str, object]:
    reader = payload["reader"]
    assert isinstance(reader, iii_trio.ChannelReader)
    digest = hashlib.sha256()
    size = 0
    async for chunk in reader:  # b"" (the end of the loop) only after a clean end
        digest.update(chunk)
        size += len(chunk)
    return {"name": payload["name"], "size": size, "sha256": digest.hexdigest()}


async def main(url: str) -> None:
    path = os.path.join(tempfile.mkdtemp(), "upload.bin")
    with open(path, "wb") as file:
        file.write(os.urandom(8 * 1024 * 1024))
    async with iii_trio.connect_worker(url, name="processor") as processor:
        processor.register_function("files::checksum", checksum)
        await processor.sync()  # the engine has the registration before anyone calls
        async with iii_trio.connect_worker(url, name="uploader") as client:
            async with client.open_channel() as channel, trio.open_nursery() as nursery:
                result: dict[str, object] = {}

                async def call() -> None:
                    result.update(
                        await client.trigger(
                            "files::checksum", {"reader": channel.reader_ref, "name": "upload.bin"}
                        )
                    )

                nursery.start_soon(call)
                await iii_trio.send_file(path, channel.writer)  # ends the stream cleanly
    with open(path, "rb") as source:
        expected = hashlib.sha256(source.read()).hexdigest()
    print(f"uploaded {result['size']} bytes, sha256 {result['sha256']}")
    print("match" if result["sha256"] == expected else "MISMATCH")
    if result["sha256"] != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    trio.run(main, engine_url(__doc__ or ""))
