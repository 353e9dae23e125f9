"""Errors that leave our context managers as themselves.

Our public context managers (``connect_worker``, ``open_engine``, ``Worker.open_channel``, the
stream helpers, the pytest fixtures) each own a nursery, so an exception raised in the user's
block, or the one failure of a background task, would leave wrapped in an ``ExceptionGroup``
that ``except FunctionNotFound:`` does not catch. :func:`open_nursery` is a nursery whose
exceptions leave by these rules (the ones trio-websocket 0.12 settled on for
``open_websocket``):

* one exception, or one besides cancellations: it leaves as itself, with its own traceback,
  cause and context (not the group's);
* a ``KeyboardInterrupt`` anywhere: a ``KeyboardInterrupt`` leaves (the group as its cause);
* only cancellations: the block's own exception if it had one, else a ``Cancelled``;
* several real failures at once: the group, unchanged. Only then is a group the truth.

:func:`describe` names the failure inside a group for a message on the wire
(``RuntimeError: disk on fire``), where the group's own text says nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import trio


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` (nested groups flattened), or ``[exc]``."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(leaves(inner))
    return found


def describe(exc: BaseException) -> str:
    """A one-line description of what failed: ``str(exc)`` for a plain exception (as iii's
    SDKs send it), ``Type: message`` of each failure inside a group."""
    if not isinstance(exc, BaseExceptionGroup):
        return str(exc) or type(exc).__name__
    real = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)] or leaves(exc)
    text = "; ".join(f"{type(e).__name__}: {e}".rstrip(": ") for e in real)
    return text if len(real) == 1 else f"{len(real)} errors: {text}"


def _raise_bare(exc: BaseException) -> NoReturn:
    """Raise ``exc`` keeping its own ``__context__`` (raising it while the group is being
    handled would make the group its context, and the group holds ``exc``)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def reraise_single(
    group: BaseExceptionGroup[BaseException], body: BaseException | None
) -> NoReturn:
    """Raise what ``group`` (a nursery's) stands for, by the rules in the module docstring.
    ``body`` is the exception the nursery's own block raised, if any."""
    found = leaves(group)
    for exc in found:
        if isinstance(exc, KeyboardInterrupt):
            if len(found) == 1:
                _raise_bare(exc)
            raise KeyboardInterrupt from group
    real = [e for e in found if not isinstance(e, trio.Cancelled)]
    if len(real) == 1:
        _raise_bare(real[0])
    if not real:
        _raise_bare(body if body is not None and body in found else found[0])
    raise group


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose single failure leaves as itself (see the module docstring)."""
    body: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body = exc
                raise
    except BaseExceptionGroup as group:
        reraise_single(group, body)
