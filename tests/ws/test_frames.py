"""RFC 6455 framing, sans-IO: :class:`FrameReader`, :func:`encode_frame` and masking.

Frames in these tests are mostly built by hand (``_frame`` below, straight from RFC 6455
section 5.2) so that the reader is not only checked against our own encoder.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_trio._ws._frames import (
    MESSAGE_TOO_BIG,
    NO_STATUS,
    PROTOCOL_ERROR,
    FrameError,
    FrameReader,
    Opcode,
    close_payload,
    encode_frame,
    frame_header,
    is_valid_close_code,
    parse_close,
)
from iii_trio._ws._mask import FAST_MASK, apply_mask, python_apply_mask

BIG: int = 64 * 1024 * 1024


def _reference_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def _frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """One frame, built independently of ``frame_header``.

    ``length`` overrides the declared payload length; ``length_form`` forces the 7-bit (0),
    16-bit (126) or 64-bit (127) length encoding.
    """
    n = len(payload) if length is None else length
    form = length_form if length_form is not None else (0 if n < 126 else 126 if n < 65536 else 127)
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask_key is not None else 0
    if form == 0:
        out.append(mask_bit | n)
    elif form == 126:
        out.append(mask_bit | 126)
        out += struct.pack("!H", n)
    else:
        out.append(mask_bit | 127)
        out += struct.pack("!Q", n)
    if mask_key is not None:
        out += mask_key
        out += _reference_mask(payload, mask_key)
    else:
        out += payload
    return bytes(out)


def _reader(*, server: bool = True, max_size: int = BIG) -> FrameReader:
    return FrameReader(expect_masked=server, max_message_size=max_size)


def _drain(reader: FrameReader) -> list[tuple[Opcode, bytes]]:
    out: list[tuple[Opcode, bytes]] = []
    while (event := reader.next_message()) is not None:
        out.append(event)
    return out


def _error(reader: FrameReader, data: bytes) -> FrameError:
    reader.feed(data)
    with pytest.raises(FrameError) as info:
        _drain(reader)
    return info.value


KEY = b"\x37\xfa\x21\x3d"


# --- RFC 6455 section 5.7 examples ---------------------------------------------------------


def test_rfc_examples() -> None:
    hello_unmasked = bytes.fromhex("810548656c6c6f")
    hello_masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert frame_header(Opcode.TEXT, 5) + b"Hello" == hello_unmasked
    assert frame_header(Opcode.TEXT, 5, mask_key=KEY) + apply_mask(b"Hello", KEY) == hello_masked
    assert _frame(Opcode.TEXT, b"Hello", mask_key=KEY) == hello_masked

    client = _reader(server=False)
    client.feed(hello_unmasked + bytes.fromhex("010348656c") + bytes.fromhex("80026c6f"))
    client.feed(bytes.fromhex("890548656c6c6f"))  # unmasked ping
    assert _drain(client) == [
        (Opcode.TEXT, b"Hello"),
        (Opcode.TEXT, b"Hello"),
        (Opcode.PING, b"Hello"),
    ]
    server = _reader(server=True)
    server.feed(hello_masked + bytes.fromhex("8a8537fa213d7f9f4d5158"))  # masked pong
    assert _drain(server) == [(Opcode.TEXT, b"Hello"), (Opcode.PONG, b"Hello")]

    assert frame_header(Opcode.BINARY, 256) == bytes.fromhex("827e0100")
    assert frame_header(Opcode.BINARY, 65536) == bytes.fromhex("827f0000000000010000")
    assert frame_header(Opcode.BINARY, 125) == bytes.fromhex("827d")
    assert frame_header(Opcode.BINARY, 126) == bytes.fromhex("827e007e")
    assert frame_header(Opcode.BINARY, 65535) == bytes.fromhex("827effff")
    assert frame_header(Opcode.CONTINUATION, 0, fin=False) == b"\x00\x00"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("server", [True, False])
def test_length_encodings(size: int, server: bool) -> None:
    payload = os.urandom(size)
    reader = _reader(server=server)
    for part in encode_frame(Opcode.BINARY, payload, mask=server):
        reader.feed(bytes(part))
    assert _drain(reader) == [(Opcode.BINARY, payload)]
    assert reader.buffered == 0


def test_non_minimal_length_is_tolerated() -> None:
    reader = _reader(server=False)
    reader.feed(
        _frame(Opcode.BINARY, b"abc", length_form=126) + _frame(Opcode.TEXT, b"x", length_form=127)
    )
    assert _drain(reader) == [(Opcode.BINARY, b"abc"), (Opcode.TEXT, b"x")]


def test_encode_frame_masks_for_clients() -> None:
    payload = b"some payload" * 20
    header, body = encode_frame(Opcode.TEXT, payload, mask=True)
    assert header[1] & 0x80
    key = bytes(header[-4:])
    assert _reference_mask(bytes(body), key) == payload
    header, body = encode_frame(Opcode.TEXT, payload, mask=False)
    assert not header[1] & 0x80
    assert bytes(body) == payload
    # A memoryview payload works too (the data path sends slices without copying).
    view = memoryview(payload)[5:]
    assert (
        b"".join(bytes(p) for p in encode_frame(Opcode.BINARY, view, mask=False))[4:] == payload[5:]
    )


# --- round trips with random splits --------------------------------------------------------

data_messages = st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), st.binary(max_size=300))
control_frames = st.tuples(st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125))


@st.composite
def wire_streams(draw: st.DrawFn) -> tuple[bool, bytes, list[tuple[Opcode, bytes]]]:
    """A byte stream of random messages, some fragmented with pings between the fragments,
    and the events a reader must produce from it."""
    server = draw(st.booleans())
    chunks: list[bytes] = []
    expected: list[tuple[Opcode, bytes]] = []

    def mask_key() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if server else None

    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            opcode, payload = draw(control_frames)
            chunks.append(_frame(opcode, payload, mask_key=mask_key()))
            expected.append((opcode, payload))
            continue
        opcode, payload = draw(data_messages)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        interleaved: list[tuple[Opcode, bytes]] = []
        for i, piece in enumerate(pieces):
            first, last = i == 0, i == len(pieces) - 1
            chunks.append(
                _frame(
                    opcode if first else Opcode.CONTINUATION, piece, fin=last, mask_key=mask_key()
                )
            )
            if not last and draw(st.booleans()):
                ping = draw(control_frames)
                chunks.append(_frame(ping[0], ping[1], mask_key=mask_key()))
                interleaved.append(ping)
        expected.extend(interleaved)  # control frames come out before the message completes
        expected.append((opcode, payload))
    return server, b"".join(chunks), expected


@given(wire_streams(), st.data())
def test_random_split_round_trip(
    stream: tuple[bool, bytes, list[tuple[Opcode, bytes]]], data: st.DataObject
) -> None:
    server, wire, expected = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    reader = _reader(server=server)
    events: list[tuple[Opcode, bytes]] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        reader.feed(wire[a:b])
        events.extend(_drain(reader))
    assert events == expected
    assert reader.buffered == 0


@given(wire_streams())
def test_byte_at_a_time(stream: tuple[bool, bytes, list[tuple[Opcode, bytes]]]) -> None:
    server, wire, expected = stream
    reader = _reader(server=server)
    events: list[tuple[Opcode, bytes]] = []
    for i in range(len(wire)):
        reader.feed(wire[i : i + 1])
        events.extend(_drain(reader))
    assert events == expected


@given(
    st.lists(st.tuples(st.sampled_from(list(Opcode)), st.binary(max_size=200)), max_size=6),
    st.booleans(),
)
def test_encode_frame_round_trip(messages: list[tuple[Opcode, bytes]], mask: bool) -> None:
    messages = [
        (op, payload[:125] if op >= Opcode.CLOSE else payload)
        for op, payload in messages
        if op != Opcode.CONTINUATION
    ]
    reader = _reader(server=mask)
    for opcode, payload in messages:
        for part in encode_frame(opcode, payload, mask=mask):
            reader.feed(bytes(part))
    assert _drain(reader) == messages


def test_partial_frames_return_none() -> None:
    wire = _frame(Opcode.BINARY, b"x" * 70000, mask_key=KEY)
    reader = _reader()
    for cut in (1, 2, 5, 9, 10, 13, 14, 100, len(wire) - 1):
        fresh = _reader()
        fresh.feed(wire[:cut])
        assert fresh.next_message() is None
        assert fresh.next_message() is None  # asking again changes nothing
    reader.feed(wire)
    assert reader.next_message() == (Opcode.BINARY, b"x" * 70000)
    assert reader.next_message() is None


def test_buffered_counts_pending_fragments() -> None:
    reader = _reader()
    reader.feed(_frame(Opcode.TEXT, b"abc", fin=False, mask_key=KEY))
    assert reader.next_message() is None
    assert reader.buffered == 3
    reader.feed(_frame(Opcode.CONTINUATION, b"de", mask_key=KEY)[:3])
    assert reader.next_message() is None
    assert reader.buffered == 6
    reader.feed(_frame(Opcode.CONTINUATION, b"de", mask_key=KEY)[3:])
    assert reader.next_message() == (Opcode.TEXT, b"abcde")
    assert reader.buffered == 0


def test_text_is_not_utf8_checked_here() -> None:
    reader = _reader(server=False)
    reader.feed(_frame(Opcode.TEXT, b"\xff\xfe"))
    assert _drain(reader) == [(Opcode.TEXT, b"\xff\xfe")]


def test_empty_fragments() -> None:
    reader = _reader()
    reader.feed(
        _frame(Opcode.BINARY, b"", fin=False, mask_key=KEY)
        + _frame(Opcode.CONTINUATION, b"", fin=False, mask_key=KEY)
        + _frame(Opcode.PING, b"", mask_key=KEY)
        + _frame(Opcode.CONTINUATION, b"", mask_key=KEY)
    )
    assert _drain(reader) == [(Opcode.PING, b""), (Opcode.BINARY, b"")]


# --- violations ----------------------------------------------------------------------------


def test_masking_is_enforced() -> None:
    assert _error(_reader(server=True), _frame(Opcode.TEXT, b"hi")).code == PROTOCOL_ERROR
    assert (
        _error(_reader(server=False), _frame(Opcode.TEXT, b"hi", mask_key=KEY)).code
        == PROTOCOL_ERROR
    )
    # Control frames too.
    assert _error(_reader(server=True), _frame(Opcode.PING, b"")).code == PROTOCOL_ERROR
    assert (
        _error(_reader(server=False), _frame(Opcode.CLOSE, b"", mask_key=KEY)).code
        == PROTOCOL_ERROR
    )


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits(rsv: int) -> None:
    err = _error(_reader(), _frame(Opcode.TEXT, b"hi", rsv=rsv, mask_key=KEY))
    assert err.code == PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("server", [True, False])
def test_reserved_opcodes(opcode: int, server: bool) -> None:
    err = _error(_reader(server=server), _frame(opcode, b"x", mask_key=KEY if server else None))
    assert err.code == PROTOCOL_ERROR


def test_errors_need_only_the_header() -> None:
    """Violations are reported as soon as the two header bytes are in."""
    for first in (0xC1, 0x83, 0x09):  # rsv1, reserved opcode, fragmented ping
        reader = _reader(server=False)
        reader.feed(bytes([first, 0x05]))
        with pytest.raises(FrameError):
            reader.next_message()


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_limits(opcode: Opcode) -> None:
    assert _error(_reader(), _frame(opcode, b"x" * 126, mask_key=KEY)).code == PROTOCOL_ERROR
    assert _error(_reader(), _frame(opcode, b"x" * 200, mask_key=KEY)).code == PROTOCOL_ERROR
    # Declared in the 16-bit form, rejected from the header alone.
    reader = _reader(server=False)
    reader.feed(bytes([0x80 | opcode, 126, 0, 126]))
    with pytest.raises(FrameError) as info:
        reader.next_message()
    assert info.value.code == PROTOCOL_ERROR
    # 125 is fine.
    reader = _reader()
    reader.feed(_frame(opcode, b"x" * 125, mask_key=KEY))
    assert _drain(reader) == [(opcode, b"x" * 125)]
    # Fragmented control frames are not allowed, whatever their size.
    assert _error(_reader(), _frame(opcode, b"", fin=False, mask_key=KEY)).code == PROTOCOL_ERROR


def test_continuation_without_start() -> None:
    for fin in (True, False):
        err = _error(_reader(), _frame(Opcode.CONTINUATION, b"x", fin=fin, mask_key=KEY))
        assert err.code == PROTOCOL_ERROR
    # Also after a completed fragmented message.
    reader = _reader()
    reader.feed(
        _frame(Opcode.TEXT, b"a", fin=False, mask_key=KEY)
        + _frame(Opcode.CONTINUATION, b"b", mask_key=KEY)
    )
    assert _drain(reader) == [(Opcode.TEXT, b"ab")]
    assert _error(reader, _frame(Opcode.CONTINUATION, b"c", mask_key=KEY)).code == PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_new_data_frame_inside_fragmented_message(opcode: Opcode) -> None:
    reader = _reader()
    reader.feed(_frame(Opcode.BINARY, b"a", fin=False, mask_key=KEY))
    assert reader.next_message() is None
    assert _error(reader, _frame(opcode, b"b", mask_key=KEY)).code == PROTOCOL_ERROR


def test_message_too_big_is_detected_from_the_header() -> None:
    limit = 1000
    # One frame one byte over the limit: only its header is fed.
    for server in (True, False):
        reader = _reader(server=server, max_size=limit)
        wire = _frame(Opcode.BINARY, b"x" * (limit + 1), mask_key=KEY if server else None)
        reader.feed(wire[:4])  # 2 header bytes + 16-bit length, no mask key, no payload
        with pytest.raises(FrameError) as info:
            reader.next_message()
        assert info.value.code == MESSAGE_TOO_BIG
    # Exactly at the limit is fine.
    reader = _reader(max_size=limit)
    reader.feed(_frame(Opcode.TEXT, b"y" * limit, mask_key=KEY))
    assert _drain(reader) == [(Opcode.TEXT, b"y" * limit)]
    # A 64-bit length far beyond the limit: rejected before any payload arrives.
    reader = _reader(server=False, max_size=BIG)
    reader.feed(bytes([0x82, 127]) + struct.pack("!Q", 1 << 40))
    with pytest.raises(FrameError) as info:
        reader.next_message()
    assert info.value.code == MESSAGE_TOO_BIG


def test_message_too_big_across_fragments() -> None:
    reader = _reader(max_size=100)
    reader.feed(_frame(Opcode.BINARY, b"a" * 60, fin=False, mask_key=KEY))
    assert reader.next_message() is None
    reader.feed(_frame(Opcode.PING, b"p" * 100, mask_key=KEY))  # control frames do not count
    assert reader.next_message() == (Opcode.PING, b"p" * 100)
    reader.feed(_frame(Opcode.CONTINUATION, b"b" * 40, fin=False, mask_key=KEY))
    assert reader.next_message() is None
    header_only = _frame(Opcode.CONTINUATION, b"c", mask_key=KEY)[:2]
    assert _error(reader, header_only).code == MESSAGE_TOO_BIG


def test_control_frames_are_not_limited_by_max_message_size() -> None:
    reader = _reader(max_size=0)
    reader.feed(
        _frame(Opcode.PING, b"abc", mask_key=KEY) + _frame(Opcode.BINARY, b"", mask_key=KEY)
    )
    assert _drain(reader) == [(Opcode.PING, b"abc"), (Opcode.BINARY, b"")]


@pytest.mark.parametrize("length", [1 << 63, (1 << 64) - 1, (1 << 63) + 5])
def test_64_bit_length_with_top_bit(length: int) -> None:
    reader = _reader(server=False)
    reader.feed(bytes([0x82, 127]) + struct.pack("!Q", length))
    with pytest.raises(FrameError) as info:
        reader.next_message()
    assert info.value.code == PROTOCOL_ERROR


# --- close frames --------------------------------------------------------------------------


def test_parse_close() -> None:
    assert parse_close(b"") == (NO_STATUS, "")
    assert parse_close(struct.pack("!H", 1000)) == (1000, "")
    assert parse_close(struct.pack("!H", 4001) + "why é".encode()) == (4001, "why é")
    for code in (
        1000,
        1001,
        1002,
        1003,
        1007,
        1008,
        1009,
        1010,
        1011,
        1012,
        1013,
        1014,
        3000,
        4999,
    ):
        assert parse_close(struct.pack("!H", code)) == (code, "")


def test_close_with_one_byte() -> None:
    with pytest.raises(FrameError) as info:
        parse_close(b"\x03")
    assert info.value.code == PROTOCOL_ERROR


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(FrameError) as info:
        parse_close(struct.pack("!H", code) + b"reason")
    assert info.value.code == PROTOCOL_ERROR


@given(st.integers(0, 65535))
def test_close_code_validity(code: int) -> None:
    expected = code in {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014} or (
        3000 <= code <= 4999
    )
    assert is_valid_close_code(code) == expected
    payload = struct.pack("!H", code)
    if expected:
        assert parse_close(payload) == (code, "")
    else:
        with pytest.raises(FrameError):
            parse_close(payload)


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_close_reason_must_be_utf8(reason: bytes) -> None:
    with pytest.raises(FrameError) as info:
        parse_close(struct.pack("!H", 1000) + reason)
    assert info.value.code == 1007


def test_close_payload() -> None:
    assert close_payload(NO_STATUS) == b""
    assert close_payload(NO_STATUS, "ignored") == b""
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(4001, "why") == b"\x0f\xa1why"
    assert len(close_payload(1000, "x" * 500)) == 125
    # Cut at a UTF-8 boundary: 61 two-byte characters (122 bytes) fit, the 62nd does not.
    payload = close_payload(1000, "é" * 100)
    assert payload[2:] == ("é" * 61).encode()
    payload = close_payload(1000, "a" + "€" * 100)  # 1 + 3*40 = 121 bytes, then a partial
    assert payload[2:] == ("a" + "€" * 40).encode()
    for reserved in (999, 1004, 1006, 1015, 2999, 5000):  # never sent on the wire
        with pytest.raises(ValueError, match=str(reserved)):
            close_payload(reserved, "x")


@given(st.integers(1000, 4999).filter(is_valid_close_code), st.text())
def test_close_payload_round_trip(code: int, reason: str) -> None:
    payload = close_payload(code, reason)
    assert len(payload) <= 125
    parsed_code, parsed_reason = parse_close(payload)  # valid UTF-8, valid code
    assert parsed_code == code
    assert reason.startswith(parsed_reason)
    if len(reason.encode()) <= 123:
        assert parsed_reason == reason
    else:
        assert len(parsed_reason.encode()) > 119  # at most one 4-byte character dropped
    # And it fits in a control frame the reader accepts.
    reader = _reader(server=False)
    for part in encode_frame(Opcode.CLOSE, payload, mask=False):
        reader.feed(bytes(part))
    assert _drain(reader) == [(Opcode.CLOSE, payload)]


# --- masking -------------------------------------------------------------------------------


def test_c_mask_is_in_use() -> None:
    # The data path depends on it; if the wheel lacks it we want to know.
    assert FAST_MASK


@given(st.binary(max_size=10_000), st.binary(min_size=4, max_size=4))
def test_python_mask_matches_c_mask(data: bytes, key: bytes) -> None:
    expected = _reference_mask(data, key) if len(data) < 2000 else None
    fast = apply_mask(data, key)
    slow = python_apply_mask(data, key)
    assert fast == slow
    if expected is not None:
        assert slow == expected
    assert python_apply_mask(slow, key) == data  # an involution


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 4095, 4096, 4097, 8192, 8195, 100_003])
def test_mask_block_boundaries(size: int) -> None:
    data = os.urandom(size)
    key = os.urandom(4)
    expected = _reference_mask(data, key)
    assert python_apply_mask(data, key) == expected
    assert apply_mask(data, key) == expected
    assert python_apply_mask(bytearray(data), key) == expected
    assert python_apply_mask(memoryview(data), key) == expected
    padded = b"!!" + data
    assert python_apply_mask(memoryview(padded)[2:], key) == expected
    assert apply_mask(memoryview(padded)[2:], key) == expected


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_mask_key_length(key: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        python_apply_mask(b"data", key)


def test_trim_keeps_unparsed_bytes_in_a_small_buffer() -> None:
    reader = _reader(max_size=1 << 20)
    frames = [_frame(Opcode.BINARY, bytes([n]) * 40_000, mask_key=KEY) for n in range(5)]
    wire = b"".join(frames) + frames[0][:1000]  # five frames and the start of a sixth
    reader.feed(wire)
    assert reader.next_message() == (Opcode.BINARY, bytes([0]) * 40_000)
    pending = len(wire) - len(frames[0])
    reader.trim()
    assert len(reader._buf) == pending  # only what is still to parse
    for n in range(1, 5):
        assert reader.next_message() == (Opcode.BINARY, bytes([n]) * 40_000)
    assert reader.next_message() is None
    reader.feed(frames[0][1000:])  # the rest of the sixth frame
    assert reader.next_message() == (Opcode.BINARY, bytes([0]) * 40_000)
    assert reader.buffered == 0
