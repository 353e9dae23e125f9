"""Trigger types and bindings in the trio worker SDK.

Two roles, and a worker can play both:

* **Binder.** :meth:`Worker.register_trigger` binds one of your functions to a trigger type
  with a config; the returned :class:`TriggerRef` unbinds it and reports a provider's refusal
  (:meth:`TriggerRef.wait_failed`). Bindings are replayed on every connect.
* **Provider.** :meth:`Worker.register_trigger_type` provides a type with a handler object:
  ``register_trigger(binding)`` runs when the engine delivers a binding,
  ``unregister_trigger(binding)`` when it goes. Each delivered binding is a
  :class:`TriggerBinding` that owns a nursery: start the binding's work there
  (:meth:`TriggerBinding.start_soon`) and call :meth:`TriggerBinding.fire` when the event
  happens. When the binding goes — the binder unbinds or disconnects, you unregister the type,
  or this connection ends — that work is cancelled first, then ``unregister_trigger`` runs.

Lifetimes follow the connection: delivered bindings live in the connection's nursery, so a
lost connection cancels them all (the engine delivers them again after the reconnect, when the
trigger types are replayed). If ``register_trigger`` raises, the engine is told
``trigger_registration_failed`` and forwards it to the binder; if the binding's work crashes
later, the binder gets ``trigger_failed``. Either way the connection and the worker go on.

Registration messages made while connected are posted to the connection's outbox at once, in
call order with the worker's other registrations (so a bind followed by an unbind cannot arrive
swapped, and a binding made right after its function's registration arrives after it).

The module knows nothing of :class:`~iii_trio.Worker`: it is given a function that posts a
message on the current connection, the worker's ``trigger`` (for :meth:`TriggerBinding.fire`)
and a function that returns the worker's namespace.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, final

import attrs
import trio

from iii_trio._codes import TRIGGER_FAILED, TRIGGER_REGISTRATION_FAILED
from iii_trio._errors import IIIError
from iii_trio._unwrap import leaves
from iii_trio.protocol import (
    JSON,
    ErrorBody,
    Message,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    UnregisterTriggerType,
    encode,
    new_uuid,
)

from ._refs import payload_to_json
from ._session import Session


class Trigger(Protocol):
    """The worker's ``trigger`` (what :meth:`TriggerBinding.fire` calls)."""

    async def __call__(
        self,
        function_id: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        action: Any = None,
    ) -> Any: ...


logger = logging.getLogger("iii_trio.worker")

#: Seconds ``unregister_trigger`` may run when the binding goes because the connection ended.
UNREGISTER_GRACE: Final = 5.0


class TriggerError(IIIError):
    """A binding was refused or failed, as reported by its provider (or the engine).

    Attributes:
        code: the wire code (``trigger_registration_failed``, ``trigger_failed``, ...).
        message: the provider's message.
        trigger_id: the binding's id.
        trigger_type: the binding's trigger type.
        function_id: the bound function.
        stacktrace: the provider's stack trace, if it sent one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        trigger_id: str,
        trigger_type: str,
        function_id: str,
        stacktrace: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.trigger_id = trigger_id
        self.trigger_type = trigger_type
        self.function_id = function_id
        self.stacktrace = stacktrace


class TriggerHandler(Protocol):
    """What :meth:`Worker.register_trigger_type` needs: two methods, async or plain (plain
    ones run inline and must not block). Official-SDK ``TriggerHandler`` objects fit too: a
    :class:`TriggerBinding` has the ``id``/``function_id``/``config``/``metadata`` fields of
    iii's ``TriggerConfig``."""

    def register_trigger(self, binding: TriggerBinding) -> Awaitable[None] | None:
        """A binding arrived: validate ``binding.config`` (raise to refuse it) and start its
        work in the binding's nursery."""

    def unregister_trigger(self, binding: TriggerBinding) -> Awaitable[None] | None:
        """The binding went; its work has already been cancelled."""


@final
class TriggerBinding:
    """A binding delivered to this worker as a provider; handed to the type's handler.

    Attributes:
        id: the binding's id (chosen by the binder).
        trigger_type: the type it binds to.
        function_id: the function to fire.
        config: the binder's config for this binding.
        metadata: the binder's metadata, if any.
        namespace: the namespace ``function_id`` lives in.
    """

    def __init__(self, trigger: Trigger, msg: RegisterTrigger) -> None:
        self.id = msg.id
        self.trigger_type = msg.trigger_type
        self.function_id = msg.function_id
        self.config = msg.config
        self.metadata = msg.metadata
        self.namespace = msg.namespace
        self._trigger = trigger
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return (
            f"<TriggerBinding {self.id} {self.trigger_type} -> {self.function_id}"
            f"{'' if self.active else ' (gone)'}>"
        )

    @property
    def active(self) -> bool:
        """Whether the binding is still served (its nursery is open)."""
        return self._nursery is not None

    @property
    def nursery(self) -> trio.Nursery:
        """The binding's nursery: tasks started here are cancelled when the binding goes.

        Raises:
            RuntimeError: the binding is gone.
        """
        if self._nursery is None:
            raise RuntimeError(f"trigger binding {self.id} is gone")
        return self._nursery

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        """Run ``fn(*args)`` for as long as the binding lives (an error in it ends the binding
        and is reported to the binder as ``trigger_failed``).

        Raises:
            RuntimeError: the binding is gone.
        """
        self.nursery.start_soon(fn, *args, name=name)

    async def start(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> Any:
        """Like :meth:`start_soon`, but wait until ``fn`` calls ``task_status.started(value)``
        and return ``value``.

        Raises:
            RuntimeError: the binding is gone, or ``fn`` returned before calling ``started``.
        """
        return await self.nursery.start(fn, *args, name=name)

    async def fire(
        self,
        payload: Any = None,
        *,
        timeout: float | None = None,
        action: Any = None,
    ) -> Any:
        """Call the bound function with ``payload`` and return its result (see
        :meth:`Worker.trigger`; ``action="void"`` does not wait for the result).

        Raises:
            FunctionNotFound: nobody serves the bound function.
            InvocationFailed: the bound function raised.
            InvocationTimeout: no answer within ``timeout`` seconds.
            InvocationStopped: the function's worker went away before answering.
            WorkerDisconnected: our connection dropped during the call.
            InvocationError: any other error code from the engine.
        """
        return await self._trigger(self.function_id, payload, timeout=timeout, action=action)


@final
class TriggerRef:
    """A binding made by this worker (:meth:`Worker.register_trigger`).

    Attributes:
        id: the binding's id (a UUID made here).
        trigger_type: the type it binds to.
        function_id: the bound function.
        config: the config sent to the provider.
        metadata: the metadata sent to the provider.
        error: the last refusal or failure a provider reported, if any (cleared when the
            binding is sent again after a reconnect).
    """

    def __init__(self, support: WorkerTriggers, message: RegisterTrigger) -> None:
        self.id = message.id
        self.trigger_type = message.trigger_type
        self.function_id = message.function_id
        self.config = message.config
        self.metadata = message.metadata
        self.message = message
        self.error: TriggerError | None = None
        self._failed = trio.Event()
        self._support = support

    def __repr__(self) -> str:
        return f"<TriggerRef {self.id} {self.function_id} <- {self.trigger_type}>"

    @property
    def registered(self) -> bool:
        """Whether the binding is still registered (not unregistered)."""
        return self._support.bindings.get(self.id) is self

    def unregister(self) -> None:
        """Remove the binding (no-op if already removed); its provider is told."""
        self._support.unregister_trigger(self.id)

    async def wait_failed(self) -> TriggerError:
        """Wait until a provider refuses or fails this binding, and return the error (at once
        if it already has)."""
        await self._failed.wait()
        assert self.error is not None
        return self.error

    def _fail(self, error: TriggerError) -> None:
        self.error = error
        self._failed.set()

    def _reset(self) -> None:
        if self._failed.is_set():
            self.error = None
            self._failed = trio.Event()


@attrs.frozen
class _TypeSpec:
    message: RegisterTriggerType
    handler: TriggerHandler


@final
class TriggerTypeRef:
    """A trigger type this worker provides (:meth:`Worker.register_trigger_type`)."""

    def __init__(self, support: WorkerTriggers, trigger_type_id: str) -> None:
        self.id = trigger_type_id
        self._support = support

    def __repr__(self) -> str:
        return f"<TriggerTypeRef {self.id}>"

    @property
    def bindings(self) -> dict[str, TriggerBinding]:
        """The bindings of this type currently served on this connection, by id."""
        return {
            binding_id: served.binding
            for binding_id, served in self._support.served.items()
            if served.binding.trigger_type == self.id and served.binding.active
        }

    def register_trigger(
        self, function_id: str, config: Any = None, *, metadata: JSON = None
    ) -> TriggerRef:
        """Bind ``function_id`` to this type (:meth:`Worker.register_trigger`).

        Raises:
            ValueError: ``function_id`` is empty.
        """
        return self._support.register_trigger(self.id, function_id, config, metadata=metadata)

    def unregister(self) -> None:
        """Stop providing this type (:meth:`Worker.unregister_trigger_type`)."""
        self._support.unregister_trigger_type(self.id)


@attrs.define(eq=False)
class _Served:
    """A delivered binding being served: its cancel scope, and an event set when its handler
    is done with it (so a replacement with the same id starts after the old one ended)."""

    binding: TriggerBinding
    handler: TriggerHandler
    previous: _Served | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)


@final
class WorkerTriggers:
    """A worker's trigger state: types it provides, bindings it made (both replayed on each
    connect) and bindings delivered to it on the current connection.

    Args:
        post: posts a message on the current connection (a no-op while disconnected: the
            next connection replays the current state).
        trigger: the worker's ``trigger``.
        namespace: returns the worker's namespace.
    """

    def __init__(
        self,
        post: Callable[[Message], None],
        trigger: Trigger,
        namespace: Callable[[], str | None],
    ) -> None:
        self._post = post
        self._trigger = trigger
        self._namespace = namespace
        self.types: dict[str, _TypeSpec] = {}
        self.bindings: dict[str, TriggerRef] = {}
        self.served: dict[str, _Served] = {}
        self._session: Session | None = None

    # --- public operations (via Worker) ----------------------------------------------------

    def register_trigger_type(
        self,
        trigger_type: str | Mapping[str, Any],
        handler: TriggerHandler,
        *,
        description: str = "",
        trigger_request_format: JSON = None,
        call_request_format: JSON = None,
    ) -> TriggerTypeRef:
        """Raises: TypeError (bad handler), ValueError (empty id), LocalProtocolError (the
        formats are not JSON)."""
        if isinstance(trigger_type, Mapping):
            spec = trigger_type
            trigger_type = spec["id"]
            description = spec.get("description") or description
            trigger_request_format = spec.get("trigger_request_format", trigger_request_format)
            call_request_format = spec.get("call_request_format", call_request_format)
        if not isinstance(trigger_type, str) or not trigger_type:
            raise ValueError("trigger type id must be a non-empty string")
        for method in ("register_trigger", "unregister_trigger"):
            if not callable(getattr(handler, method, None)):
                raise TypeError(f"trigger handler needs a {method}(binding) method")
        message = RegisterTriggerType(
            id=trigger_type,
            description=description,
            trigger_request_format=trigger_request_format,
            call_request_format=call_request_format,
        )
        encode(message)  # not JSON: fail here, not in the sender task
        self.types[trigger_type] = _TypeSpec(message, handler)
        self._post(message)
        return TriggerTypeRef(self, trigger_type)

    def unregister_trigger_type(self, trigger_type_id: str) -> None:
        if self.types.pop(trigger_type_id, None) is None:
            return
        self._post(UnregisterTriggerType(id=trigger_type_id))
        for binding_id, served in list(self.served.items()):
            if served.binding.trigger_type == trigger_type_id:
                del self.served[binding_id]
                served.scope.cancel()

    def register_trigger(
        self,
        trigger_type: str | Mapping[str, Any],
        function_id: str | None = None,
        config: Any = None,
        *,
        metadata: JSON = None,
        namespace: str | None = None,
        trigger_namespace: str | None = None,
    ) -> TriggerRef:
        """Raises: ValueError (empty trigger type or function id), LocalProtocolError (config
        or metadata is not JSON)."""
        if isinstance(trigger_type, Mapping):
            spec = trigger_type
            trigger_type = spec.get("type") or spec.get("trigger_type") or ""
            function_id = spec.get("function_id", function_id)
            config = spec.get("config", config)
            metadata = spec.get("metadata", metadata)
            namespace = spec.get("namespace", namespace)
            trigger_namespace = spec.get("trigger_namespace", trigger_namespace)
        if not isinstance(trigger_type, str) or not trigger_type:
            raise ValueError("trigger_type must be a non-empty string")
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("function_id must be a non-empty string")
        if hasattr(config, "model_dump"):  # pydantic models, as the official SDK allows
            config = config.model_dump()
        message = RegisterTrigger(
            id=new_uuid(),
            trigger_type=trigger_type,
            function_id=function_id,
            config=payload_to_json(config),
            metadata=metadata,
            namespace=namespace if namespace is not None else self._namespace(),
            trigger_namespace=trigger_namespace,
        )
        encode(message)  # not JSON: fail here, not in the sender task
        ref = TriggerRef(self, message)
        self.bindings[ref.id] = ref
        self._post(message)
        return ref

    def unregister_trigger(self, trigger_id: str) -> None:
        ref = self.bindings.pop(trigger_id, None)
        if ref is not None:
            self._post(UnregisterTrigger(id=trigger_id, trigger_type=ref.trigger_type))

    # --- connection lifecycle ---------------------------------------------------------------

    def replay_types(self) -> list[Message]:
        """The trigger types to replay on a new connection (before the functions)."""
        return [spec.message for spec in self.types.values()]

    def replay_bindings(self) -> list[Message]:
        """The bindings to replay on a new connection (after the functions)."""
        for ref in self.bindings.values():
            ref._reset()
        return [ref.message for ref in self.bindings.values()]

    def attach(self, session: Session | None) -> None:
        """Bindings delivered from now on are served in ``session``'s nursery (``None``: the
        connection ended)."""
        self._session = session

    # --- messages from the engine ----------------------------------------------------------

    def on_message(self, msg: Message) -> bool:
        """Handle a trigger message from the engine; ``False`` if ``msg`` is not one."""
        if isinstance(msg, RegisterTrigger):
            self._deliver(msg)
        elif isinstance(msg, UnregisterTrigger):
            served = self.served.pop(msg.id, None)
            if served is not None:
                served.scope.cancel()
        elif isinstance(msg, TriggerRegistrationResult):
            self._result(msg)
        else:
            return False
        return True

    def _result(self, msg: TriggerRegistrationResult) -> None:
        if msg.error is None:
            return
        error = TriggerError(
            msg.error.code,
            msg.error.message,
            trigger_id=msg.id,
            trigger_type=msg.trigger_type,
            function_id=msg.function_id,
            stacktrace=msg.error.stacktrace,
        )
        logger.error(
            "trigger %s (%s -> %s) failed: %s", msg.id, msg.trigger_type, msg.function_id, error
        )
        ref = self.bindings.get(msg.id)
        if ref is not None:
            ref._fail(error)

    def _deliver(self, msg: RegisterTrigger) -> None:
        session = self._session
        if session is None:
            return  # the connection is ending; the engine re-delivers after the reconnect
        spec = self.types.get(msg.trigger_type)
        if spec is None:
            _report(
                session,
                msg,
                ErrorBody(
                    code=TRIGGER_REGISTRATION_FAILED,
                    message=f"trigger type '{msg.trigger_type}' is not provided by this worker",
                ),
            )
            return
        previous = self.served.get(msg.id)
        if previous is not None:
            previous.scope.cancel()
        served = _Served(TriggerBinding(self._trigger, msg), spec.handler, previous)
        self.served[msg.id] = served
        session.nursery.start_soon(self._serve, served, session, msg)

    async def _serve(self, served: _Served, session: Session, msg: RegisterTrigger) -> None:
        binding = served.binding
        registered = False
        failure: BaseException | None = None
        try:
            with served.scope:
                if served.previous is not None:
                    await served.previous.done.wait()
                    served.previous = None
                async with trio.open_nursery() as nursery:
                    binding._nursery = nursery
                    await _call(served.handler.register_trigger, binding)
                    registered = True
                    _report(session, msg, None)
                    await trio.sleep_forever()
        except BaseExceptionGroup as group:
            cancelled, errors = group.split(trio.Cancelled)
            failure = errors
            if cancelled is not None:
                if errors is not None:
                    _log_failure(binding, errors, registered)
                raise cancelled from None
        except Exception as exc:
            failure = exc
        finally:
            binding._nursery = None
            if self.served.get(binding.id) is served:
                del self.served[binding.id]
            try:
                if registered:
                    with trio.CancelScope(shield=True), trio.move_on_after(UNREGISTER_GRACE):
                        try:
                            await _call(served.handler.unregister_trigger, binding)
                        except Exception:
                            logger.exception("unregister_trigger of %s raised", binding.id)
            finally:
                served.done.set()
        if failure is not None:
            _log_failure(binding, failure, registered)
            cause = _leaf(failure)
            code = TRIGGER_FAILED if registered else TRIGGER_REGISTRATION_FAILED
            error = ErrorBody(
                code=code,
                message=str(cause) or type(cause).__name__,
                stacktrace="".join(traceback.format_exception(cause)),
            )
            _report(session, msg, error)


async def _call(
    method: Callable[[TriggerBinding], Awaitable[None] | None], binding: TriggerBinding
) -> None:
    result = method(binding)
    if inspect.isawaitable(result):
        await result


def _report(session: Session, msg: RegisterTrigger, error: ErrorBody | None) -> None:
    # A connection that ended drops it: the engine re-resolves the binding itself.
    session.post(
        TriggerRegistrationResult(
            id=msg.id, trigger_type=msg.trigger_type, function_id=msg.function_id, error=error
        )
    )


def _leaf(exc: BaseException) -> BaseException:
    """The first real failure inside ``exc`` (``exc`` itself if it is not a group)."""
    found = leaves(exc)
    return next((e for e in found if not isinstance(e, trio.Cancelled)), found[0])


def _log_failure(binding: TriggerBinding, exc: BaseException, registered: bool) -> None:
    what = "failed" if registered else "was refused"
    logger.warning("trigger %s (%s) %s: %r", binding.id, binding.trigger_type, what, _leaf(exc))
