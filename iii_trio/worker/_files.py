"""Files in and out of channels, with optional progress callbacks."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

import trio

from ._channels import ChannelReader, ChannelWriter

#: Bytes read from or written to the file per step.
FILE_CHUNK: Final = 256 * 1024

Progress = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total_or_None)``, called after every chunk."""


async def send_file(
    path: str | os.PathLike[str],
    writer: ChannelWriter,
    *,
    progress: Progress | None = None,
    close: bool = True,
    chunk_size: int = FILE_CHUNK,
) -> int:
    """Stream a file into ``writer``; returns the bytes sent. With ``close`` (the default) the
    stream then ends cleanly; if reading the file fails the writer is aborted instead, so the
    reader never mistakes a partial file for a whole one.

    Raises:
        OSError: the file could not be read.
        ChannelBroken, trio.BrokenResourceError, trio.ClosedResourceError: as ``send_all``.
    """
    sent = 0
    try:
        async with await trio.open_file(path, "rb") as file:
            total = os.fstat(file.fileno()).st_size
            while chunk := await file.read(chunk_size):
                await writer.send_all(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, total)
    except OSError as exc:
        await writer.abort(f"reading {os.fspath(path)!r} failed: {exc}")
        raise
    if close:
        await writer.aclose()
    return sent


async def receive_file(
    reader: ChannelReader,
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    total: int | None = None,
) -> int:
    """Write everything ``reader`` delivers into a file (created or truncated); returns the
    bytes written. If the stream does not end cleanly the error propagates and the partial
    file is removed.

    Raises:
        ChannelBroken: the writer aborted or was lost.
        OSError: the file could not be written.
    """
    received = 0
    try:
        async with await trio.open_file(path, "wb") as file:
            async for chunk in reader:
                await file.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.Path(path).unlink(missing_ok=True)
        raise
    return received
