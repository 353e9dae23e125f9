"""Process-wide C allocator settings for processes that relay bulk channel data.

Every channel frame becomes a ``bytes`` object (64 KiB - 1 MiB) that lives until the next hop
has written it. With glibc's defaults the heap shrinks whenever the top of it is free
(``M_TRIM_THRESHOLD``, 128 KiB until freed ``mmap`` chunks raise it) and grows again for the
next frame: every relayed megabyte then costs tens of page faults, each a kernel entry that
zero-fills a fresh page. On a 2-core VM, keeping the memory cut an engine's CPU time per
relayed MB by a fifth at 1 MiB chunks (``benchmarks/``, benchmark 1, interleaved A/B runs). Keeping freed memory in the process instead removes the faults;
peak memory is unchanged (it is set by what is live at once, which the engine bounds), but
memory freed after a burst stays with the process, up to the trim threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Final

logger = logging.getLogger("iii_trio")

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

#: glibc's largest ``M_MMAP_THRESHOLD``: 32 MiB with 64-bit ``long``, 512 KiB on 32-bit builds.
_MMAP_THRESHOLD_MAX: Final = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
_INT_MAX: Final = 2**31 - 1

#: Free memory at the top of the heap kept before it is given back to the OS.
DEFAULT_TRIM_THRESHOLD: Final = 64 * 1024 * 1024
#: Allocations at least this large get their own ``mmap`` (and page faults) every time.
DEFAULT_MMAP_THRESHOLD: Final = min(8 * 1024 * 1024, _MMAP_THRESHOLD_MAX)


def tune_allocator(
    *,
    trim_threshold: int = DEFAULT_TRIM_THRESHOLD,
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
) -> bool:
    """Set glibc's ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` for this process, so that
    relaying channel frames does not page-fault (glibc otherwise gives the heap back after a
    frame is freed and faults it in again for the next one). The ``iii-trio engine`` command
    does this at start; call it early in a process that embeds an engine or streams a lot, if
    that process may keep up to ``trim_threshold`` bytes of freed memory.

    Returns False, changing nothing, where the C library is not glibc (macOS, Windows, musl).

    Raises:
        ValueError: a threshold is negative or too large (``mmap_threshold`` over glibc's
            cap: 32 MiB on 64-bit builds; ``trim_threshold`` over what a C ``int`` holds).
    """
    if trim_threshold < 0 or mmap_threshold < 0:
        raise ValueError("thresholds must not be negative")
    if trim_threshold > _INT_MAX:
        raise ValueError(f"trim_threshold must be at most {_INT_MAX} (a C int)")
    if mmap_threshold > _MMAP_THRESHOLD_MAX:
        raise ValueError(f"glibc caps M_MMAP_THRESHOLD at {_MMAP_THRESHOLD_MAX} bytes here")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has mallopt too)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Each setting on its own: a refused one must not keep the other from being made.
    mmap_ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    trim_ok = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if not (mmap_ok and trim_ok):  # pragma: no cover - glibc accepts every value checked above
        logger.warning(
            "mallopt refused the allocator settings (mmap %s, trim %s)", mmap_ok, trim_ok
        )
    return mmap_ok and trim_ok


__all__ = ["tune_allocator"]
