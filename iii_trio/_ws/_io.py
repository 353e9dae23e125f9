"""The socket side of :class:`~._connection.WebSocket`: reads and gathered writes with one
schedule point each (``readv``/``writev`` called directly on the socket), and the frames of a
batch of messages encoded in one pass. No state of its own."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Final

import trio

from ._frames import Opcode, encode_frame, frame_header

#: Buffers below this size are copied together; larger payloads go to the kernel as their
#: own buffer of a gathered write (``writev``), so relayed bytes are not copied again.
COALESCE_LIMIT: Final = 16 * 1024
#: Buffers per ``writev`` call (Linux's IOV_MAX is 1024).
IOV_MAX: Final = 512


async def recv_into(
    sock: trio.socket.SocketType,
    get_buffer: Callable[[int], memoryview],
    size: int,
    *,
    wait_first: bool,
) -> int:
    """Read into ``get_buffer(size)`` with one schedule point: the wait for data, or after the
    read. The buffer is asked for only when the read is about to happen (and its view released
    before this returns), so a connection that waits for data holds no buffer meanwhile.

    ``wait_first``: wait until ``sock`` is readable before reading, for a connection whose
    last read emptied it (every small message): trying first would cost a failed system call
    and an exception each time. Otherwise (more is probably waiting) read at once. trio's
    ``recv_into`` does the same with two checkpoints and two context managers around it.

    Raises:
        OSError: the connection broke.
        trio.ClosedResourceError: the socket was closed (by another task of ours).
    """
    waited = False
    if not wait_first:
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: raise before reading
    while True:
        if wait_first:
            await trio.lowlevel.wait_readable(sock)
            waited = True
        fd = sock.fileno()  # -1 once closed: never read a file descriptor reused since
        if fd == -1:
            raise trio.ClosedResourceError("the socket was closed")
        view = get_buffer(size)
        try:
            received = os.readv(fd, [view])
        except BlockingIOError:
            wait_first = True  # no data after all: wait for it
            continue
        finally:
            view.release()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return received


async def send_gathered(stream: trio.abc.Stream, buffers: list[bytes | memoryview]) -> None:
    """Write ``buffers`` in order with as few system calls as possible. One schedule point:
    the final one, or each wait while the socket is full.

    On a socket this calls ``writev`` itself and waits for the socket only when it is full:
    trio's ``sendmsg`` wraps every call in two checkpoints and two context managers, a
    fixed cost paid per relayed frame.

    Raises:
        trio.BrokenResourceError: the connection broke.
        trio.ClosedResourceError: the stream was closed (by us).
    """
    if not isinstance(stream, trio.SocketStream):
        for buffer in buffers:
            await stream.send_all(buffer)
        return
    sock = stream.socket
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    first = 0
    waited = False
    while first < len(views):
        fd = sock.fileno()  # -1 once closed: never write to a descriptor reused since
        if fd == -1:
            raise trio.ClosedResourceError("the socket was closed")
        try:
            sent = os.writev(fd, views[first : first + IOV_MAX])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            waited = True
            continue
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        while sent:
            view = views[first]
            if sent >= len(view):
                sent -= len(view)
                first += 1
            else:
                views[first] = view[sent:]
                sent = 0
    if not waited:
        await trio.lowlevel.cancel_shielded_checkpoint()


_TEXT_HEADERS: Final = [frame_header(Opcode.TEXT, n) for n in range(126)]
_BINARY_HEADERS: Final = [frame_header(Opcode.BINARY, n) for n in range(126)]
#: The first two bytes of an unmasked frame with a 16-bit length.
_TEXT_HEADER16: Final = bytes((0x80 | Opcode.TEXT, 126))
_BINARY_HEADER16: Final = bytes((0x80 | Opcode.BINARY, 126))


def encode_batch(
    messages: Iterable[str | bytes | memoryview], *, mask: bool
) -> list[bytes | memoryview]:
    """Data frames for ``messages``, ready to write: what ``coalesce`` makes of
    ``encode_frame``'s output, in one pass (this runs for every message sent), with the
    headers of unmasked short frames from a table."""
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    for message in messages:
        if isinstance(message, str):
            payload: bytes | memoryview = message.encode("utf-8")
            opcode, headers, header16 = Opcode.TEXT, _TEXT_HEADERS, _TEXT_HEADER16
        else:
            payload = message
            opcode, headers, header16 = Opcode.BINARY, _BINARY_HEADERS, _BINARY_HEADER16
        size = len(payload)
        if mask:
            header, payload = encode_frame(opcode, payload, mask=True)
        elif size < 126:
            header = headers[size]
        elif size < 0x10000:
            header = header16 + size.to_bytes(2, "big")
        else:
            header = frame_header(opcode, size)
        pending.append(header)
        if size >= COALESCE_LIMIT:
            out.append(b"".join(pending))
            pending = []
            out.append(payload)
        else:
            pending.append(payload)
    if pending:
        out.append(b"".join(pending))
    return out


def coalesce(frames: list[list[bytes | memoryview]]) -> list[bytes | memoryview]:
    """Join small buffers into one write; keep large payloads as their own writes."""
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    for frame in frames:
        for part in frame:
            if len(part) >= COALESCE_LIMIT:
                if pending:
                    out.append(b"".join(pending))
                    pending = []
                out.append(part)
            else:
                pending.append(part)
    if pending:
        out.append(b"".join(pending) if len(pending) > 1 else pending[0])
    return out
