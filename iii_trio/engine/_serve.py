"""Running an engine: for the duration of a block (:func:`open_engine`) or until cancelled
(:func:`serve_engine`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from .._unwrap import open_nursery
from ._config import EngineConfig
from ._engine import Engine


@asynccontextmanager
async def open_engine(config: EngineConfig | None = None, **settings: Any) -> AsyncIterator[Engine]:
    """Run an engine in the background for the duration of the block.

    ``settings`` are :class:`EngineConfig` fields (``port=0`` for a free port is the usual
    choice in tests). On exit the engine stops and every connection is closed. An exception
    raised in the block leaves it as itself (never wrapped in an ``ExceptionGroup``).

    Raises:
        OSError: the address could not be bound (e.g. the port is in use).
        ValueError: a setting is out of range (see :class:`EngineConfig`).
        TypeError: an unknown setting.
    """
    async with open_nursery() as nursery:
        engine: Engine = await nursery.start(partial(serve_engine, config, **settings))
        try:
            yield engine
        finally:
            nursery.cancel_scope.cancel()


async def serve_engine(
    config: EngineConfig | None = None,
    *,
    task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED,
    **settings: Any,
) -> None:
    """Run an engine until cancelled (``await nursery.start(serve_engine, ...)`` gives it).

    Args:
        config: the settings (default :class:`EngineConfig`'s).
        task_status: gets the running :class:`Engine` once it listens.
        **settings: :class:`EngineConfig` fields, overriding ``config``'s.

    Raises:
        OSError: the address could not be bound (e.g. the port is in use).
        ValueError: a setting is out of range.
    """
    if config is None:
        config = EngineConfig(**settings)
    elif settings:
        config = attrs.evolve(config, **settings)
    await Engine(config).run(task_status=task_status)
