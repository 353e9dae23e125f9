"""A soak-test worker process: serves ``{prefix}::echo`` and ``{prefix}::sink``.

usage: python -m benchmarks._soak_worker URL PREFIX
Prints ``{"event": "ready"}`` once its functions are registered; runs until killed.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import trio

import iii_trio

from ._common import emit


async def main(url: str, prefix: str) -> None:
    async with iii_trio.connect_worker(url, name=f"soak-{prefix}") as worker:

        async def echo(payload: Any) -> Any:
            return payload["n"]

        async def sink(payload: Any) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            async for chunk in payload["reader"]:
                digest.update(chunk)
                size += len(chunk)
            return {"size": size, "sha256": digest.hexdigest()}

        worker.register_function(f"{prefix}::echo", echo)
        worker.register_function(f"{prefix}::sink", sink)
        await worker.sync()
        emit({"event": "ready"})
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
