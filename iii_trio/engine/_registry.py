"""Which worker serves which function. Synchronous bookkeeping, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, final

import attrs

from ..protocol import JSON

DEFAULT_NAMESPACE: Final = "default"
RESERVED_PREFIX: Final = "engine::"


@attrs.frozen(kw_only=True)
class FunctionEntry:
    namespace: str
    function_id: str
    worker_id: str
    description: str | None = None
    metadata: JSON = None
    request_format: JSON = None
    response_format: JSON = None
    #: Registered as HTTP-invoked (iii's ``invocation`` field); not callable here.
    http: bool = False


@final
class FunctionRegistry:
    """One live owner per ``(namespace, function_id)``; the first registration wins.

    ``on_change(key)`` is called after every successful registration (for waiters).
    """

    def __init__(self, on_change: Callable[[tuple[str, str]], None] | None = None) -> None:
        self._entries: dict[tuple[str, str], FunctionEntry] = {}
        self._on_change = on_change

    def register(self, entry: FunctionEntry) -> FunctionEntry | None:
        """Add or refresh ``entry``. Returns the conflicting entry of another worker, if any
        (and then changes nothing)."""
        key = (entry.namespace, entry.function_id)
        current = self._entries.get(key)
        if current is not None and current.worker_id != entry.worker_id:
            return current
        self._entries[key] = entry
        if self._on_change is not None:
            self._on_change(key)
        return None

    def unregister(self, namespace: str, function_id: str, worker_id: str) -> bool:
        """Remove the function if ``worker_id`` owns it."""
        key = (namespace, function_id)
        current = self._entries.get(key)
        if current is None or current.worker_id != worker_id:
            return False
        del self._entries[key]
        return True

    def remove_worker(self, worker_id: str) -> list[FunctionEntry]:
        """Remove every function ``worker_id`` owns; returns them."""
        gone = [e for e in self._entries.values() if e.worker_id == worker_id]
        for entry in gone:
            del self._entries[(entry.namespace, entry.function_id)]
        return gone

    def lookup(self, namespace: str, function_id: str) -> FunctionEntry | None:
        return self._entries.get((namespace, function_id))

    def owned_by(self, worker_id: str) -> list[FunctionEntry]:
        return [e for e in self._entries.values() if e.worker_id == worker_id]

    def __iter__(self) -> Iterator[FunctionEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
