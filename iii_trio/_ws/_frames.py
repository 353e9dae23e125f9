"""RFC 6455 framing, sans-IO: bytes in, messages out; messages in, bytes out.

Fragmented messages are reassembled; control frames may interleave with fragments. Every
violation raises :class:`FrameError` carrying the close code to send (1002 protocol error,
1007 bad UTF-8, 1008 too many frames in one message, 1009 too big). No trio import.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Final, final

from ._mask import apply_mask


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: Close codes (RFC 6455 section 7.4.1).
NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
NO_STATUS: Final = 1005  # never on the wire: "the Close frame had no status code"
ABNORMAL_CLOSURE: Final = 1006  # never on the wire: "the connection dropped without a Close"
INVALID_DATA: Final = 1007
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011

_SENDABLE_CODES: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
_DATA_OPCODES: Final = (Opcode.TEXT, Opcode.BINARY)
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")
#: A frame header's first two bytes and its 16- or 64-bit length, packed in one call.
_HEADER16: Final = struct.Struct("!BBH")
_HEADER64: Final = struct.Struct("!BBQ")


@final
class FrameError(Exception):
    """The peer broke RFC 6455. ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame."""
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


def parse_close(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` of a Close frame payload (1005 when it carries no code).

    Raises:
        FrameError: a one-byte payload, an invalid code, or a reason that is not UTF-8.
    """
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "close frame payload of one byte")
    (code,) = _U16.unpack_from(payload)
    if not is_valid_close_code(code):
        raise FrameError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(INVALID_DATA, "close reason is not UTF-8") from exc
    return code, reason


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a Close frame; ``reason`` is cut to fit the 125-byte limit.

    Raises:
        ValueError: ``code`` may not be sent (RFC 6455 section 7.4; 1005 means no code).
    """
    if code == NO_STATUS:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        raw = raw[:123].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + raw


def frame_header(
    opcode: int, length: int, *, fin: bool = True, mask_key: bytes | None = None
) -> bytes:
    """The header of one frame carrying ``length`` payload bytes."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        header = _HEADER16.pack(first, mask_bit | 126, length)
    else:
        header = _HEADER64.pack(first, mask_bit | 127, length)
    return header + mask_key if mask_key is not None else header


def encode_frame(
    opcode: int, payload: bytes | memoryview, *, mask: bool
) -> list[bytes | memoryview]:
    """One unfragmented frame as a list of buffers (header, payload) to write in order.

    Clients must mask (``mask=True``); servers must not.
    """
    if not mask:
        return [frame_header(opcode, len(payload)), payload]
    key = _mask_key()
    return [frame_header(opcode, len(payload), mask_key=key), apply_mask(payload, key)]


#: Mask keys are drawn from ``os.urandom`` this many bytes at a time: one system call per
#: 1024 frames instead of one per frame. The keys are as unpredictable (RFC 6455 section
#: 10.3 asks for a strong source of entropy, which this is); only the syscalls are fewer.
_KEY_POOL_SIZE: Final = 4096
_key_pool = b""
_key_offset = 0


def _mask_key() -> bytes:
    global _key_pool, _key_offset
    start = _key_offset
    if start + 4 > len(_key_pool):
        _key_pool, start = os.urandom(_KEY_POOL_SIZE), 0
    _key_offset = start + 4
    return _key_pool[start : start + 4]


def _reset_key_pool() -> None:
    # A forked child must not use the keys its parent has in its pool.
    global _key_pool, _key_offset
    _key_pool, _key_offset = b"", 0


os.register_at_fork(after_in_child=_reset_key_pool)


#: Frames one fragmented message may span, control frames sent between its fragments
#: included. Peers that fragment at all use few, large fragments (the official iii Python SDK
#: sends 1 MiB continuation frames, 80 for an 80 MiB message; browsers and Node's ``ws`` do
#: not fragment), so this leaves them a wide margin while a message of tiny or empty
#: fragments, which costs a parse per frame and never reaches the byte limit, is cut off.
MAX_MESSAGE_FRAMES: Final = 4096

#: Fragments of at least this many bytes are kept as parts of their own while a message is
#: assembled; smaller ones are gathered into a bytearray (see :class:`FrameReader`).
_OWN_PART: Final = 4096

#: Opcode members by value, so the parser need not call ``Opcode(value)`` (an enum lookup
#: through ``EnumType.__call__``) for every frame.
_OPCODES: Final = {op.value: op for op in Opcode}
#: First read size of a fresh receive buffer; it doubles while reads fill it.
_MIN_READ: Final = 16 * 1024
#: Read buffers of ``_MIN_READ`` bytes kept for reuse, process-wide, at most (1 MiB).
_POOL_MAX: Final = 64
_POOL: list[bytearray] = []


@final
class FrameReader:
    """Incremental frame parser for one direction of one connection.

    Bytes arrive either with :meth:`feed` or, without an intermediate ``bytes`` object, by
    reading straight into :meth:`get_buffer` and calling :meth:`buffer_updated` (the way
    ``socket.recv_into`` is used).

    Buffer management: received bytes live in ``self._buf[self._start:self._end]``; a parsed
    frame only advances ``_start`` (no ``del buf[:n]``, no copy of what follows). The buffer
    is never resized in place, so one memoryview of it can live as long as it does; it is
    replaced by a bigger one when a frame does not fit (growing at most twice over per read,
    so a peer cannot make us allocate a huge frame's size before sending it), and dropped
    once everything in it was parsed after a small read, so an idle connection holds no
    buffer. Dropped buffers of the smallest read size go to a small process-wide pool
    (:data:`_POOL_MAX` of them at most) that the next small read takes from: a connection
    that gets one small message at a time does not allocate and zero a buffer per message.

    A fragmented message is kept as it arrives in a list of parts: a fragment of at least
    :data:`_OWN_PART` bytes is a part of its own (no copy beyond the one that unmasks it,
    and one join at the end, as for any message), smaller ones are appended to a
    ``bytearray`` part. So the memory one holds is its payload bytes plus at most about 3%
    (two objects per 4 KiB in the worst case), however many frames it came in: a list of
    2-byte fragments took 20 times their size. Its frames are counted against
    ``max_message_frames`` and its bytes against ``max_message_size``.

    Args:
        expect_masked: True on the server side (client frames must be masked), False on the
            client side (server frames must not be).
        max_message_size: the largest data message accepted, after reassembly (larger →
            close 1009).
        max_message_frames: the most frames one fragmented message may span, counting the
            control frames that arrive between its first and last fragment (more → close
            1008). An unfragmented message is one frame.
    """

    def __init__(
        self,
        *,
        expect_masked: bool,
        max_message_size: int,
        max_message_frames: int = MAX_MESSAGE_FRAMES,
    ) -> None:
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        #: Bytes still missing for the frame at ``_start`` (at least 1 when we wait).
        self._need = 1
        self._read_size = _MIN_READ
        self._last_read_full = False
        self._offered = 0
        self._last_read_size = 0
        self._max_read = _MIN_READ
        self._expect_masked = expect_masked
        self._max_message_size = max_message_size
        self._max_message_frames = max_message_frames
        #: The fragmented message being assembled: its opcode (None between messages), its
        #: payload so far, its size and how many frames it took so far.
        self._fragment_opcode: Opcode | None = None
        self._fragments: list[bytes | bytearray] = []
        self._fragment_size = 0
        self._fragment_frames = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        size = len(data)
        if size:
            self._reserve(size)
            self._view[self._end : self._end + size] = data
            self._end += size

    def get_buffer(self, max_size: int) -> memoryview:
        """A writable view to receive into: the buffer's free space, made at least
        ``max_size`` bytes (fewer while reads stay small, more to complete a frame already
        announced). Call :meth:`buffer_updated` with the count written before anything else,
        and release the view first."""
        self._max_read = max_size
        want = max(min(self._read_size, max_size), 1)
        size = max(want, min(self._need, max_size))
        self._reserve(size, grow_to=want)
        view = self._view[self._end :]  # all the free space: at least ``size`` bytes
        self._offered = len(view)
        return view

    @property
    def last_read_full(self) -> bool:
        """Whether the last read filled the space offered (so more data is likely waiting)."""
        return self._last_read_full

    def buffer_updated(self, size: int) -> None:
        """``size`` bytes were written at the start of the last :meth:`get_buffer` view."""
        self._end += size
        self._last_read_size = size
        # Bulk traffic fills each read: read more at once next time (up to max_size); a
        # trickle shrinks the reads back, and lets the buffer go when all of it is parsed.
        full = size >= self._offered
        self._last_read_full = full
        if full:
            if self._read_size < self._max_read:
                self._read_size *= 2
        elif size < self._read_size // 8 and self._read_size > _MIN_READ:
            self._read_size //= 2

    def _reserve(self, size: int, grow_to: int = 0) -> None:
        """Make room for ``size`` more bytes after ``_end``."""
        buf = self._buf
        if len(buf) - self._end >= size:
            return
        pending = self._end - self._start
        if pending + size <= len(buf) and pending <= len(buf) // 2:
            # Enough room once the unparsed tail moves to the front (a short memmove).
            self._view[:pending] = self._view[self._start : self._end]
        else:
            # What is pending plus this read, rounded up to a power of two so that the next
            # reads fit too: the buffer follows the data that actually arrives (at most twice
            # over), never the size a frame header merely announces. Near the end of a large
            # frame it grows to that frame's end and no further: a 16 MiB frame then takes a
            # 16 MiB buffer, not 32.
            capacity = 1 << (pending + max(size, grow_to) - 1).bit_length()
            if self._need > grow_to:  # the frame at _start is larger than a read
                frame_end = pending + max(self._need, size)
                capacity = min(capacity, frame_end)
            new = _POOL.pop() if capacity == _MIN_READ and _POOL else bytearray(capacity)
            new[:pending] = self._view[self._start : self._end]
            self._view.release()
            self._buf = new
            self._view = memoryview(new)
        self._start = 0
        self._end = pending

    def _consumed_all(self) -> None:
        """Everything received was parsed: reuse the buffer from its start, or drop it when
        the connection looks idle (the last read was small) or it grew well past the read
        size for one big frame, so an idle connection holds no buffer."""
        self._start = self._end = 0
        buf = self._buf
        if buf and (
            self._last_read_size < _MIN_READ or len(buf) > 4 * max(self._max_read, _MIN_READ)
        ):
            self._view.release()
            if len(buf) == _MIN_READ and len(_POOL) < _POOL_MAX:
                _POOL.append(buf)  # no view of it is left: ours was the only one
            self._buf = bytearray()
            self._view = memoryview(self._buf)

    def trim(self) -> None:
        """Shrink the buffer to the bytes not parsed yet, and start the next reads small: for
        a connection about to sit still (e.g. a channel writer held back by backpressure),
        so that it does not keep a bulk-sized buffer meanwhile. Only between reads."""
        pending = self._end - self._start
        self._read_size = _MIN_READ
        if len(self._buf) <= pending + _MIN_READ:
            return
        new = bytearray(pending)
        new[:] = self._view[self._start : self._end]
        self._view.release()
        self._buf = new
        self._view = memoryview(new)
        self._start = 0
        self._end = pending

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a message."""
        return self._end - self._start + self._fragment_size

    @property
    def capacity(self) -> int:
        """Bytes of receive buffer held now (none while idle: see :meth:`get_buffer`)."""
        return len(self._buf)

    def next_message(self) -> tuple[Opcode, bytes] | None:
        """The next complete message or control frame, or ``None`` if more bytes are needed.

        Returns ``(opcode, payload)`` with ``opcode`` one of TEXT, BINARY, CLOSE, PING, PONG;
        the payload is unmasked. TEXT payloads are *not* yet UTF-8 checked.

        Raises:
            FrameError: the peer broke the protocol; the reader must not be used again.
        """
        # The common case first, with plain integers: a whole text or binary message in one
        # frame of less than 64 KiB, masked as expected, no fragmented message pending.
        # Anything else (or a frame that breaks a rule) takes the general path below.
        start = self._start
        available = self._end - start
        if available >= 4 and self._fragment_opcode is None:
            buf = self._buf
            first = buf[start]
            if first == 0x81 or first == 0x82:
                second = buf[start + 1]
                masked = second >> 7
                length = second & 0x7F
                offset = 2
                if length == 126:
                    length = (buf[start + 2] << 8) | buf[start + 3]
                    offset = 4
                if (
                    second & 0x7F != 127  # (a 64-bit length: the general path)
                    and bool(masked) == self._expect_masked
                    and length <= self._max_message_size
                ):
                    if masked:
                        offset += 4
                    end = start + offset + length
                    if end <= self._end:
                        begin = start + offset
                        self._start = end
                        view = self._view
                        if masked:
                            payload = apply_mask(view[begin:end], bytes(view[begin - 4 : begin]))
                        else:
                            payload = bytes(view[begin:end])
                        return (Opcode.TEXT if first == 0x81 else Opcode.BINARY), payload
        while True:
            buf = self._buf
            start = self._start
            available = self._end - start
            if available < 2:
                if not available:
                    self._consumed_all()
                self._need = 2 - available
                return None
            first = buf[start]
            second = buf[start + 1]
            if first & 0x70:
                raise FrameError(PROTOCOL_ERROR, "reserved bits set (no extension negotiated)")
            fin = first & 0x80
            masked = bool(second & 0x80)
            length = second & 0x7F
            offset = 2
            if length == 126:
                if available < 4:
                    self._need = 4 - available
                    return None
                (length,) = _U16.unpack_from(buf, start + 2)
                offset = 4
            elif length == 127:
                if available < 10:
                    self._need = 10 - available
                    return None
                (length,) = _U64.unpack_from(buf, start + 2)
                if length >> 63:
                    raise FrameError(PROTOCOL_ERROR, "frame length has the top bit set")
                offset = 10
            if masked != self._expect_masked:
                raise FrameError(
                    PROTOCOL_ERROR,
                    "client frames must be masked"
                    if self._expect_masked
                    else "server frames must not be masked",
                )
            opcode = _OPCODES.get(first & 0x0F)
            if opcode is None:
                raise FrameError(PROTOCOL_ERROR, f"reserved opcode {first & 0x0F:#x}") from None
            if opcode >= Opcode.CLOSE:
                if not fin:
                    raise FrameError(PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise FrameError(PROTOCOL_ERROR, "control frame payload over 125 bytes")
                if self._fragment_opcode is not None:
                    self._check_frame_count()  # a ping between fragments costs a frame too
            elif opcode == Opcode.CONTINUATION:
                if self._fragment_opcode is None:
                    raise FrameError(PROTOCOL_ERROR, "continuation frame with nothing to continue")
                self._check_frame_count()
            elif self._fragment_opcode is not None:
                raise FrameError(PROTOCOL_ERROR, "new data frame inside a fragmented message")
            if opcode < Opcode.CLOSE and self._fragment_size + length > self._max_message_size:
                raise FrameError(
                    MESSAGE_TOO_BIG,
                    f"message over the {self._max_message_size} byte limit",
                )
            if masked:
                offset += 4
            end = offset + length
            if available < end:
                self._need = end - available
                return None
            view = self._view
            begin = start + offset
            self._start = start + end
            if fin and opcode != Opcode.CONTINUATION:
                # A whole message, or a control frame (never fragmented): the common case.
                if masked:
                    payload = apply_mask(view[begin : start + end], bytes(view[begin - 4 : begin]))
                else:
                    payload = bytes(view[begin : start + end])
                if self._fragment_opcode is not None and opcode >= Opcode.CLOSE:
                    self._fragment_frames += 1
                return opcode, payload
            # A fragment of the message being assembled.
            if opcode != Opcode.CONTINUATION:
                self._fragment_opcode = opcode
            parts = self._fragments
            data: bytes | memoryview = (
                apply_mask(view[begin : start + end], bytes(view[begin - 4 : begin]))
                if masked
                else view[begin : start + end]
            )
            if length >= _OWN_PART:
                parts.append(data if isinstance(data, bytes) else bytes(data))
            elif parts and type(parts[-1]) is bytearray:
                parts[-1] += data  # in place: the bytearray grows
            else:
                parts.append(bytearray(data))
            self._fragment_size += length
            self._fragment_frames += 1
            if fin:
                message_opcode = self._fragment_opcode
                assert message_opcode is not None
                message = b"".join(parts)
                self._fragments = []
                self._fragment_opcode = None
                self._fragment_size = 0
                self._fragment_frames = 0
                return message_opcode, message

    def _check_frame_count(self) -> None:
        """Refuse the next frame of a fragmented message if it already took the most frames
        allowed (checked from the header: before that frame's payload arrives)."""
        if self._fragment_frames >= self._max_message_frames:
            raise FrameError(
                POLICY_VIOLATION,
                f"message fragmented into more than {self._max_message_frames} frames",
            )


__all__ = [
    "ABNORMAL_CLOSURE",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "INVALID_DATA",
    "MAX_MESSAGE_FRAMES",
    "MESSAGE_TOO_BIG",
    "NORMAL_CLOSURE",
    "NO_STATUS",
    "POLICY_VIOLATION",
    "PROTOCOL_ERROR",
    "UNSUPPORTED_DATA",
    "FrameError",
    "FrameReader",
    "Opcode",
    "close_payload",
    "encode_frame",
    "frame_header",
    "is_valid_close_code",
    "parse_close",
]
