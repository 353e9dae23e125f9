"""RFC 6455 framing, sans-IO: bytes in, messages out; messages in, bytes out.

Fragmented messages are reassembled; control frames may interleave with fragments. Every
violation raises :class:`FrameError` carrying the close code to send (1002 protocol error,
1007 bad UTF-8, 1009 too big). No trio import.
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

_SENDABLE_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                    1013, 1014})
_DATA_OPCODES: Final = (Opcode.TEXT, Opcode.BINARY)
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")


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
    """The payload of a Close frame; ``reason`` is cut to fit the 125-byte limit."""
    if code == NO_STATUS:
        return b""
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        raw = raw[:123].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + raw


def frame_header(opcode: int, length: int, *, fin: bool = True, mask_key: bytes | None = None) -> bytes:
    """The header of one frame carrying ``length`` payload bytes."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        header = bytes((first, mask_bit | 126)) + _U16.pack(length)
    else:
        header = bytes((first, mask_bit | 127)) + _U64.pack(length)
    return header + mask_key if mask_key is not None else header


def encode_frame(opcode: int, payload: bytes | memoryview, *, mask: bool) -> list[bytes | memoryview]:
    """One unfragmented frame as a list of buffers (header, payload) to write in order.

    Clients must mask (``mask=True``); servers must not.
    """
    if not mask:
        return [frame_header(opcode, len(payload)), payload]
    key = os.urandom(4)
    return [frame_header(opcode, len(payload), mask_key=key), apply_mask(payload, key)]


@final
class FrameReader:
    """Incremental frame parser for one direction of one connection.

    Args:
        expect_masked: True on the server side (client frames must be masked), False on the
            client side (server frames must not be).
        max_message_size: the largest data message accepted, after reassembly.
    """

    def __init__(self, *, expect_masked: bool, max_message_size: int) -> None:
        self._buffer = bytearray()
        self._expect_masked = expect_masked
        self._max_message_size = max_message_size
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._fragment_size = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a message."""
        return len(self._buffer) + self._fragment_size

    def next_message(self) -> tuple[Opcode, bytes] | None:
        """The next complete message or control frame, or ``None`` if more bytes are needed.

        Returns ``(opcode, payload)`` with ``opcode`` one of TEXT, BINARY, CLOSE, PING, PONG;
        the payload is unmasked. TEXT payloads are *not* yet UTF-8 checked.

        Raises:
            FrameError: the peer broke the protocol; the reader must not be used again.
        """
        buf = self._buffer
        while True:
            available = len(buf)
            if available < 2:
                return None
            first, second = buf[0], buf[1]
            if first & 0x70:
                raise FrameError(PROTOCOL_ERROR, "reserved bits set (no extension negotiated)")
            opcode_value = first & 0x0F
            fin = bool(first & 0x80)
            masked = bool(second & 0x80)
            length = second & 0x7F
            offset = 2
            if length == 126:
                if available < 4:
                    return None
                (length,) = _U16.unpack_from(buf, 2)
                offset = 4
            elif length == 127:
                if available < 10:
                    return None
                (length,) = _U64.unpack_from(buf, 2)
                if length >> 63:
                    raise FrameError(PROTOCOL_ERROR, "frame length has the top bit set")
                offset = 10
            if masked != self._expect_masked:
                raise FrameError(
                    PROTOCOL_ERROR, "client frames must be masked" if self._expect_masked
                    else "server frames must not be masked"
                )
            try:
                opcode = Opcode(opcode_value)
            except ValueError:
                raise FrameError(PROTOCOL_ERROR, f"reserved opcode {opcode_value:#x}") from None
            if opcode >= Opcode.CLOSE:
                if not fin:
                    raise FrameError(PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise FrameError(PROTOCOL_ERROR, "control frame payload over 125 bytes")
            elif opcode == Opcode.CONTINUATION:
                if self._fragment_opcode is None:
                    raise FrameError(PROTOCOL_ERROR, "continuation frame with nothing to continue")
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
                return None
            with memoryview(buf) as view:
                if masked:
                    payload = apply_mask(view[offset:end], bytes(view[offset - 4 : offset]))
                else:
                    payload = bytes(view[offset:end])
            del buf[:end]  # O(1) for a bytearray: CPython moves the start pointer
            if opcode >= Opcode.CLOSE or (fin and opcode != Opcode.CONTINUATION):
                return opcode, payload
            if opcode != Opcode.CONTINUATION:
                self._fragment_opcode = opcode
            self._fragments.append(payload)
            self._fragment_size += length
            if fin:
                message_opcode = self._fragment_opcode
                assert message_opcode is not None
                message = b"".join(self._fragments)
                self._fragments = []
                self._fragment_opcode = None
                self._fragment_size = 0
                return message_opcode, message


__all__ = [
    "ABNORMAL_CLOSURE",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "INVALID_DATA",
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
