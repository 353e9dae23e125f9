"""How the interop peer scripts wait to be stopped: stdin reaching EOF, or SIGTERM/SIGINT.

The signal handlers raise on the main thread, which waits in ``os.read(0)`` on the raw file
descriptor (a daemon thread blocked in ``sys.stdin.buffer.read()`` aborts the interpreter at
exit with "could not acquire lock for <stdin>").
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any


class _Stop(Exception):
    pass


def _raise_stop(*_: Any) -> None:
    raise _Stop


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM or SIGINT (or a closed stdin in the block) ends the block quietly; afterwards
    both signals are ignored, so that shutting down is not interrupted."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        yield
    except (_Stop, OSError):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def wait_for_stop() -> None:
    """Block until stdin reaches EOF or SIGTERM/SIGINT arrives."""
    with stop_on_signals():
        while os.read(0, 65536):
            pass
