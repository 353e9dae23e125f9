"""One immutable attrs class per iii wire message ``type``.

Field names are the wire's (snake_case). Optional fields default to ``None`` and are left out
of the encoded JSON when ``None``; ``InvokeFunction.data`` and ``InvocationResult.result`` are
always written because iii's decoder requires ``data`` and the 0.25.0 SDK keeps ``result``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    #: Any JSON value, as produced by :func:`json.loads`.
    JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
else:
    # At run time payload fields are opaque: the codec passes them through untouched.
    JSON = object


@attrs.frozen(kw_only=True)
class ErrorBody:
    """``{"code", "message", "stacktrace"?}`` on results and errors."""

    code: str
    message: str
    stacktrace: str | None = None


@attrs.frozen(kw_only=True)
class ActionVoid:
    """``{"type": "void"}``: fire and forget, the engine sends no reply."""


@attrs.frozen(kw_only=True)
class ActionEnqueue:
    """``{"type": "enqueue", "queue": ...}``: hand the call to a queue worker.

    Attributes:
        queue: the name of the queue.
    """

    queue: str


Action: TypeAlias = ActionVoid | ActionEnqueue


# --- core: functions and invocations ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class RegisterFunction:
    id: str
    description: str | None = None
    request_format: JSON = None
    response_format: JSON = None
    metadata: JSON = None
    #: iii's HTTP-invoked functions; this engine does not call HTTP endpoints.
    invocation: JSON = None


@attrs.frozen(kw_only=True)
class UnregisterFunction:
    id: str


@attrs.frozen(kw_only=True)
class InvokeFunction:
    function_id: str
    #: UUID string; ``None`` for fire-and-forget calls.
    invocation_id: str | None = None
    data: JSON = None
    traceparent: str | None = None
    baggage: str | None = None
    action: Action | None = None
    metadata: JSON = None
    namespace: str | None = None
    #: iii_trio extension: the caller's deadline in milliseconds (ignored by iii).
    timeout_ms: int | None = None


@attrs.frozen(kw_only=True)
class InvocationResult:
    invocation_id: str
    function_id: str
    result: JSON = None
    error: ErrorBody | None = None
    traceparent: str | None = None
    baggage: str | None = None


@attrs.frozen(kw_only=True)
class WorkerRegistered:
    worker_id: str
    reattach_token: str | None = None
    features: list[str] | None = None


@attrs.frozen(kw_only=True)
class Reattach:
    previous_worker_id: str
    reattach_token: str | None = None


@attrs.frozen(kw_only=True)
class RegistrationRejected:
    code: str
    namespace: str
    owner_worker_id: str
    worker_name: str | None = None
    function_id: str | None = None


@attrs.frozen(kw_only=True)
class Ping:
    pass


@attrs.frozen(kw_only=True)
class Pong:
    pass


@attrs.frozen(kw_only=True)
class Error:
    """Engine → worker error notice (iii sends it on auth failure; SDKs ignore it)."""

    error: ErrorBody


# --- peripheral: trigger types, bindings, services -------------------------------------------


@attrs.frozen(kw_only=True)
class RegisterTriggerType:
    id: str
    description: str = ""
    trigger_request_format: JSON = None
    call_request_format: JSON = None
    namespace: str | None = None


@attrs.frozen(kw_only=True)
class UnregisterTriggerType:
    id: str


@attrs.frozen(kw_only=True)
class RegisterTrigger:
    id: str
    trigger_type: str
    function_id: str
    config: JSON = None
    metadata: JSON = None
    namespace: str | None = None
    trigger_namespace: str | None = None


@attrs.frozen(kw_only=True)
class UnregisterTrigger:
    id: str
    trigger_type: str | None = None


@attrs.frozen(kw_only=True)
class TriggerRegistrationResult:
    id: str
    trigger_type: str
    function_id: str
    error: ErrorBody | None = None


@attrs.frozen(kw_only=True)
class RegisterService:
    id: str
    name: str = ""
    description: str | None = None
    parent_service_id: str | None = None


Message: TypeAlias = (
    RegisterFunction
    | UnregisterFunction
    | InvokeFunction
    | InvocationResult
    | WorkerRegistered
    | Reattach
    | RegistrationRejected
    | Ping
    | Pong
    | Error
    | RegisterTriggerType
    | UnregisterTriggerType
    | RegisterTrigger
    | UnregisterTrigger
    | TriggerRegistrationResult
    | RegisterService
)

#: The wire ``type`` tag of each message class.
WIRE_NAMES: Final[dict[type[object], str]] = {
    RegisterFunction: "registerfunction",
    UnregisterFunction: "unregisterfunction",
    InvokeFunction: "invokefunction",
    InvocationResult: "invocationresult",
    WorkerRegistered: "workerregistered",
    Reattach: "reattach",
    RegistrationRejected: "registrationrejected",
    Ping: "ping",
    Pong: "pong",
    Error: "error",
    RegisterTriggerType: "registertriggertype",
    UnregisterTriggerType: "unregistertriggertype",
    RegisterTrigger: "registertrigger",
    UnregisterTrigger: "unregistertrigger",
    TriggerRegistrationResult: "triggerregistrationresult",
    RegisterService: "registerservice",
}

#: Tags of messages iii defines that this engine accepts and ignores (0.25.0 "observe" family).
IGNORED_TAGS: Final[frozenset[str]] = frozenset(
    {
        "observe",
        "unobserve",
        "observeresult",
        "observerstatechanged",
        "functionregistered",
        "observeradded",
        "observerremoved",
        "observerack",
        "invocationsobserved",
        "localinvocationstats",
    }
)

Direction: TypeAlias = Literal["read", "write"]


@attrs.frozen(kw_only=True)
class StreamChannelRef:
    """A serializable reference to one end of a channel (iii's ``StreamChannelRef``).

    Attributes:
        channel_id: the channel's id (a UUID made by the engine).
        access_key: the secret that opens this end (one per end); never logged.
        direction: ``"read"`` for the reader's end, ``"write"`` for the writer's.
    """

    channel_id: str
    access_key: str
    direction: Direction
