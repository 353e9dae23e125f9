"""What the benchmark's child processes share: the data pattern, its verifier, JSON lines.

Every stream is made of ``chunk``-sized pieces taken from a ring of :data:`RING` distinct
chunks; chunk ``k`` starts with ``k % RING`` as 8 little-endian bytes. Writers therefore send
pre-built objects (no per-chunk copy), and a reader that tracks its byte offset can check the
stamp at every chunk start: a lost, duplicated or reordered chunk shows as a mismatch, and any
loss at all shows in the total size.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
from typing import Any, Final

KiB: Final = 1024
MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB
#: Distinct chunks a writer cycles through.
RING: Final = 16
_STAMP: Final = struct.Struct("<Q")


def make_ring(chunk: int) -> list[bytes]:
    """:data:`RING` chunks of ``chunk`` bytes: a stamp, then the same pseudo-random filler."""
    if chunk < _STAMP.size:
        raise ValueError("chunks must hold at least the 8-byte stamp")
    filler = random.Random(chunk).randbytes(chunk - _STAMP.size)
    return [_STAMP.pack(k) + filler for k in range(RING)]


def chunks(size: int, chunk: int, ring: list[bytes] | None = None) -> list[bytes]:
    """The chunks of a ``size``-byte stream (``size`` must be a multiple of ``chunk``)."""
    if size % chunk:
        raise ValueError(f"size {size} is not a multiple of the chunk size {chunk}")
    ring = ring if ring is not None else make_ring(chunk)
    return [ring[k % RING] for k in range(size // chunk)]


class Verifier:
    """Checks the stamps of a stream received in pieces of any size."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.size = 0
        self.checked = 0
        self.mismatches = 0
        self.first_at: float | None = None
        self._carry = b""  # the start of a stamp cut by the end of the previous piece
        self._carry_index = 0

    def feed(self, piece: bytes | bytearray | memoryview) -> None:
        n = len(piece)
        if not n:
            return
        if self.first_at is None:
            self.first_at = time.monotonic()
        offset = self.size
        chunk = self.chunk
        if self._carry:
            need = _STAMP.size - len(self._carry)
            self._carry += bytes(piece[:need])
            if len(self._carry) == _STAMP.size:
                self._check(self._carry, self._carry_index)
                self._carry = b""
        index = -(-offset // chunk)  # the first chunk start at or after this offset
        pos = index * chunk - offset
        while pos < n:
            stamp = piece[pos : pos + _STAMP.size]
            if len(stamp) == _STAMP.size:
                self._check(stamp, index)
            else:
                self._carry = bytes(stamp)
                self._carry_index = index
            index += 1
            pos += chunk
        self.size += n

    def _check(self, stamp: bytes | bytearray | memoryview, index: int) -> None:
        self.checked += 1
        if _STAMP.unpack(stamp)[0] != index % RING:
            self.mismatches += 1

    def report(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "checked": self.checked,
            "mismatches": self.mismatches,
            "t_first": self.first_at,
        }


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout: how a child answers the harness."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def now() -> float:
    """``time.monotonic()``: CLOCK_MONOTONIC on Linux, so comparable between processes."""
    return time.monotonic()
