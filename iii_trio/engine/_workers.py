"""The connected workers, as the router knows them. Synchronous, no I/O: the connection that
moves a worker's bytes lives in :mod:`._connection`."""

from __future__ import annotations

import logging
from typing import final

import attrs

from .._log_budget import WarningBudget
from ..protocol import JSON
from ._registry import DEFAULT_NAMESPACE

logger = logging.getLogger("iii_trio.engine")


@final
@attrs.define(eq=False, kw_only=True)
class WorkerRecord:
    """One connected worker.

    Attributes:
        worker_id: the engine's id for this connection (sent in ``workerregistered``).
        reattach_token: the secret a reconnecting SDK may present (``reattach``).
        peer: the remote address, for logs.
        connected_at_ms: wall-clock connection time (for ``engine::workers::list``).
        namespace: where its functions live (set by ``engine::workers::register``).
        info: what the worker said about itself in ``engine::workers::register``.
        bad_messages: messages from it that broke the protocol.
        internal: a service of the engine itself that talks to the router as a worker does
            (the HTTP server, the HTTP function caller); it has no connection and is not
            listed among the workers.
        warnings: the WARNING lines about what this worker sent (refused registrations and
            triggers): rationed, as a worker can send such messages without end.
    """

    worker_id: str
    reattach_token: str
    peer: str
    connected_at_ms: int
    namespace: str = DEFAULT_NAMESPACE
    info: dict[str, JSON] = attrs.field(factory=dict)
    bad_messages: int = 0
    internal: bool = False
    warnings: WarningBudget = attrs.field(factory=lambda: WarningBudget(logger), repr=False)

    @property
    def name(self) -> str:
        name = self.info.get("name")
        return name if isinstance(name, str) else self.worker_id
