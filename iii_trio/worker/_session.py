"""One live connection to the engine, on the worker side: it only moves messages.

A session owns a nursery with two tasks, the reader (decodes each frame and hands the message
to the worker's ``on_message``, a synchronous call) and the writer of its
:class:`~iii_trio._ws.Outbox`. Work the worker starts for this connection (invocations it
runs, trigger bindings it serves) lives in the same nursery, so a lost connection cancels it.

A message is written by the sending task itself when the outbox's writer is idle (one system
call, no task switch). A sender that knows more messages follow at once (a result while more
invocations wait to run, a call while others are in flight) says ``burst=True``: then it is
queued, and everything sent until the writer has run shares one write. A lone message (one
call in flight) so costs no wake-up of the writer, which would find nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, final

import trio

from .. import _codes as codes
from .._errors import IIIError, WorkerDisconnected
from .._ws import ConnectionClosed, MessageSocket, Outbox
from ..protocol import Message, RelayedInvoke, RelayedResult, decode, encode, relay_form
from ._inline import InlineRunner

logger = logging.getLogger("iii_trio.worker")

#: Bytes queued for the engine before ``trigger`` calls wait for the writer.
OUTBOX_LIMIT: Final = 8 * 1024 * 1024
#: Messages handed over from one burst before the reader lets other tasks run.
_YIELD_EVERY: Final = 16
#: Seconds a closing session spends on the close handshake.
_CLOSE_GRACE: Final = 1.0


@final
class Session:
    """One connection: ``post``/``send`` messages, ``run`` it.

    Args:
        ws: the connected socket.
        on_message: ``on_message(session, msg)`` for each message from the engine; must not
            block (start a task in :attr:`nursery` for work that waits). Calls and results
            come in their light form (``protocol.relay_form``) when they can.
    """

    def __init__(
        self,
        ws: MessageSocket,
        on_message: Callable[[Session, Message | RelayedInvoke | RelayedResult], None],
    ) -> None:
        self.ws = ws
        self.outbox = Outbox(ws, limit=OUTBOX_LIMIT)
        self._on_message = on_message
        self._nursery: trio.Nursery | None = None
        self._runner: InlineRunner | None = None

    @property
    def nursery(self) -> trio.Nursery:
        """Where work for this connection runs (cancelled when it ends).

        Raises:
            RuntimeError: the session is not running.
        """
        if self._nursery is None:
            raise RuntimeError("the session is not running")
        return self._nursery

    @property
    def runner(self) -> InlineRunner:
        """Runs this connection's invocations in :attr:`nursery`, without a task each when
        they finish without waiting (:class:`InlineRunner`).

        Raises:
            RuntimeError: the session is not running.
        """
        if self._runner is None:
            raise RuntimeError("the session is not running")
        return self._runner

    def post(self, msg: Message) -> None:
        """Queue ``msg`` without waiting (registrations and answers: their order matters, and
        their number is the worker's own).

        Raises:
            LocalProtocolError: ``msg`` holds something that is not JSON.
        """
        self.outbox.post(encode(msg))

    def post_encoded(self, text: str, *, burst: bool = False) -> None:
        """:meth:`post` for a message already encoded (``burst``: more follow at once)."""
        self.outbox.post(text, burst=burst)

    async def send(self, msg: Message) -> None:
        """Send ``msg``, waiting while the outbox is over its limit. Not a schedule point
        otherwise.

        Raises:
            WorkerDisconnected: the connection is gone.
            LocalProtocolError: ``msg`` holds something that is not JSON.
        """
        await self.send_encoded(encode(msg))

    async def send_encoded(self, text: str) -> None:
        """:meth:`send` for a message already encoded.

        Raises:
            WorkerDisconnected: the connection is gone.
        """
        try:
            await self.outbox.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WorkerDisconnected(
                codes.WORKER_DISCONNECTED, "the connection to the engine was lost"
            ) from exc

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> str:
        """Write what was posted so far and what comes, read and hand over what arrives, until
        the connection ends; returns why it ended. ``task_status.started()`` once running."""
        reason = "closed"
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._runner = InlineRunner(nursery)
                nursery.start_soon(self.outbox.run)
                task_status.started()
                try:
                    await self._read_loop()
                except ConnectionClosed as exc:
                    reason = f"{exc.code} {exc.reason}".strip()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._runner = None
            self.outbox.close()
            if not self.ws.closed:
                with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_GRACE):
                    await self.ws.close()
        return reason

    async def _read_loop(self) -> None:
        on_message = self._on_message
        ws = self.ws
        receive_nowait = ws.receive_nowait
        count = 0
        while True:
            raw: str | bytes | None = await ws.receive()
            while raw is not None:  # and the rest of a burst the same read brought
                try:
                    form = relay_form(raw)
                    msg = decode(raw) if form is None else form
                except IIIError as exc:
                    logger.warning("ignored a bad message from the engine: %s", exc)
                else:
                    on_message(self, msg)
                count += 1
                if count >= _YIELD_EVERY:
                    # Handing over never yields: let the tasks it woke run now and then.
                    count = 0
                    await trio.lowlevel.checkpoint()
                raw = receive_nowait()
