"""Registered function handlers and how they are called."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, final

import attrs
import trio

from ..protocol import JSON, RegisterFunction

Handler = Callable[[Any], Awaitable[Any]] | Callable[[Any], Any]


@final
@attrs.frozen(kw_only=True)
class FunctionSpec:
    """A function this worker serves: its registration message and its handler."""

    message: RegisterFunction
    handler: Handler
    is_async: bool

    async def call(self, data: Any) -> Any:
        if self.is_async:
            return await self.handler(data)
        # Plain functions run on a worker thread so they cannot stall the event loop.
        return await trio.to_thread.run_sync(self.handler, data)


def make_spec(
    function_id: str,
    handler: Handler,
    *,
    description: str | None,
    metadata: JSON,
    request_format: JSON,
    response_format: JSON,
) -> FunctionSpec:
    """Raises: TypeError (not callable), ValueError (empty or reserved id)."""
    if not callable(handler):
        raise TypeError("handler must be callable")
    if not isinstance(function_id, str) or not function_id:
        raise ValueError("function_id must be a non-empty string")
    if function_id.startswith("engine::"):
        raise ValueError("ids starting with 'engine::' are reserved for the engine")
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )
    message = RegisterFunction(
        id=function_id,
        description=description,
        metadata=metadata,
        request_format=request_format,
        response_format=response_format,
    )
    return FunctionSpec(message=message, handler=handler, is_async=is_async)
