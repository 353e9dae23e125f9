"""Random (version 4) UUIDs as the wire carries them: invocation, channel and binding ids."""

from __future__ import annotations

import os
from typing import Final

_VARIANT = "89ab"
#: Random bytes are drawn from ``os.urandom`` this many at a time: one system call per 256
#: ids instead of one per id (a caller makes one per call). The bytes are as unpredictable.
_POOL_SIZE: Final = 4096
_pool = b""
_offset = 0


def _reset_pool() -> None:
    # A forked child must not hand out the ids its parent has in its pool.
    global _pool, _offset
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_reset_pool)


def new_uuid() -> str:
    """A random RFC 4122 version 4 UUID in its 36-character hyphenated form.

    The same 122 random bits from ``os.urandom`` as ``str(uuid.uuid4())``, without building a
    ``UUID`` object: a caller makes one per call, and that object was a tenth of its CPU.
    """
    global _pool, _offset
    start = _offset
    if start + 16 > len(_pool):
        _pool, start = os.urandom(_POOL_SIZE), 0
    _offset = start + 16
    h = _pool[start : start + 16].hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def new_call_id() -> str:
    """A UUID (version 4 form) for a call this process makes: 64 random bits drawn once per
    process (and again after a fork), then a counter. Unique within the process, which is
    all an invocation id needs (the engine re-ids a call whose id another caller took, and
    accepts a result only from the worker it asked); unlike :func:`new_uuid`, not secret,
    and much cheaper (a caller makes one per call)."""
    global _call_counter
    _call_counter += 1
    return f"{_call_prefix}{_call_counter & 0xFFFFFFFFFFFF:012x}"


def _new_call_prefix() -> str:
    h = os.urandom(8).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[0], 16) & 3]}{h[1:4]}-"


def _reset_calls() -> None:
    global _call_prefix, _call_counter
    _call_prefix, _call_counter = _new_call_prefix(), 0


_call_prefix = _new_call_prefix()
_call_counter = 0
os.register_at_fork(after_in_child=_reset_calls)
