"""Which worker serves which function. Synchronous bookkeeping, no I/O.

Indexed by key and by worker, so a worker's departure or its function count costs what that
worker registered, never what the whole engine holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, final

import attrs

from ..protocol import JSON

DEFAULT_NAMESPACE: Final = "default"
RESERVED_PREFIX: Final = "engine::"

Key = tuple[str, str]


@attrs.frozen(kw_only=True)
class FunctionEntry:
    namespace: str
    function_id: str
    worker_id: str
    description: str | None = None
    metadata: JSON = None
    request_format: JSON = None
    response_format: JSON = None
    #: Bytes of JSON its description, metadata and formats take (bounds listings).
    info_size: int = 0
    #: The ``invocation`` config of an HTTP-invoked function (url, method, headers, auth).
    invocation: JSON = None

    @property
    def http(self) -> bool:
        """Registered as HTTP-invoked (iii's ``invocation`` field): the engine calls a URL."""
        return self.invocation is not None

    @property
    def key(self) -> Key:
        return (self.namespace, self.function_id)


class RegistryLimitExceeded(Exception):
    """A worker tried to register more functions than the engine allows."""


@final
class FunctionRegistry:
    """One live owner per ``(namespace, function_id)``; the first registration wins.

    Args:
        max_per_worker: the most functions one worker may register.
    """

    def __init__(self, *, max_per_worker: int | None = None) -> None:
        self._entries: dict[Key, FunctionEntry] = {}
        self._by_worker: dict[str, dict[Key, FunctionEntry]] = {}
        self._max_per_worker = max_per_worker

    def register(self, entry: FunctionEntry) -> FunctionEntry | None:
        """Add or refresh ``entry``. Returns the conflicting entry of another worker, if any
        (and then changes nothing).

        Raises:
            RegistryLimitExceeded: the worker already has ``max_per_worker`` functions.
        """
        key = entry.key
        current = self._entries.get(key)
        if current is not None and current.worker_id != entry.worker_id:
            return current
        owned = self._by_worker.setdefault(entry.worker_id, {})
        limit = self._max_per_worker
        if current is None and limit is not None and len(owned) >= limit:
            if not owned:
                del self._by_worker[entry.worker_id]
            raise RegistryLimitExceeded(f"more than {limit} functions for one worker")
        self._entries[key] = entry
        owned[key] = entry
        return None

    def unregister(self, namespace: str, function_id: str, worker_id: str) -> bool:
        """Remove the function if ``worker_id`` owns it."""
        key = (namespace, function_id)
        current = self._entries.get(key)
        if current is None or current.worker_id != worker_id:
            return False
        del self._entries[key]
        owned = self._by_worker[worker_id]
        del owned[key]
        if not owned:
            del self._by_worker[worker_id]
        return True

    def remove_worker(self, worker_id: str) -> list[FunctionEntry]:
        """Remove every function ``worker_id`` owns; returns them. O(its functions)."""
        owned = self._by_worker.pop(worker_id, {})
        for key in owned:
            del self._entries[key]
        return list(owned.values())

    def lookup(self, namespace: str, function_id: str) -> FunctionEntry | None:
        return self._entries.get((namespace, function_id))

    def owned_by(self, worker_id: str) -> list[FunctionEntry]:
        return list(self._by_worker.get(worker_id, {}).values())

    def count_for(self, worker_id: str) -> int:
        return len(self._by_worker.get(worker_id, ()))

    def __iter__(self) -> Iterator[FunctionEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
