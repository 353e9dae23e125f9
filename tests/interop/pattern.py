"""Reference implementation of the interop DATA PATTERN (shared by py_peer.py and tests).

The stream is the concatenation of 64 KiB blocks; block i (i = 0, 1, 2, ...) is the 32-byte
digest ``sha256(b"iii-trio:" + str(i).encode("ascii"))`` repeated 2048 times. A stream of N
bytes is that concatenation truncated to N bytes. tests/interop/node/peer.mjs implements the
same function; both must stay byte-identical.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

BLOCK_SIZE = 65536  # 2048 * 32 bytes; also the size of every write the peers make


def pattern_block(i: int) -> bytes:
    """Block ``i`` of the pattern (always BLOCK_SIZE bytes)."""
    return hashlib.sha256(b"iii-trio:" + str(i).encode("ascii")).digest() * 2048


def pattern_chunks(size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of the pattern, as consecutive chunks of at most 64 KiB."""
    i = 0
    while size > 0:
        block = pattern_block(i)
        yield block if size >= BLOCK_SIZE else block[:size]
        size -= BLOCK_SIZE
        i += 1


def pattern_bytes(size: int) -> bytes:
    """The first ``size`` bytes of the pattern as one bytes object (for small sizes)."""
    return b"".join(pattern_chunks(size))


def pattern_sha256(size: int) -> str:
    """Hex sha256 of the first ``size`` bytes of the pattern."""
    h = hashlib.sha256()
    for chunk in pattern_chunks(size):
        h.update(chunk)
    return h.hexdigest()
