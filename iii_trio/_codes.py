"""Every code that travels on the wire, in one place (no trio import: the sans-IO protocol
layer, the engine and the SDK all use it).

Two kinds: the ``code`` strings of an ``ErrorBody`` (invocation results, registration refusals,
trigger results) and the WebSocket close codes of channel sockets. The user-facing exceptions
that carry them live in :mod:`iii_trio._errors`; docs/protocol.md lists them all.
"""

from __future__ import annotations

from typing import Final

# --- ErrorBody codes: invocations -----------------------------------------------------------

#: No worker serves the function (iii's code).
FUNCTION_NOT_FOUND: Final = "function_not_found"
#: The handler raised (iii's code).
INVOCATION_FAILED: Final = "invocation_failed"
#: The executor's (or the caller's) connection went away before the answer (iii's code).
INVOCATION_STOPPED: Final = "invocation_stopped"
#: The call did not finish before its deadline (iii_trio: iii has no engine-side deadline).
INVOCATION_TIMEOUT: Final = "invocation_timeout"
#: The function is HTTP-invoked, which a worker cannot run (iii's code).
FUNCTION_NOT_INVOKABLE: Final = "function_not_invokable"
#: The executor does not read its connection fast enough: the call was refused at once.
WORKER_OVERLOADED: Final = "worker_overloaded"
#: A message broke the protocol (answer to a bad message).
INVALID_MESSAGE: Final = "invalid_message"
#: A built-in ``engine::*`` function got a payload of the wrong shape.
INVALID_PAYLOAD: Final = "invalid_payload"
#: iii's queue action; this engine has no queue worker.
ENQUEUE_ERROR: Final = "enqueue_error"
#: A per-connection or engine-wide limit was reached.
LIMIT_EXCEEDED: Final = "limit_exceeded"
#: The engine is shutting down and takes no new work.
ENGINE_SHUTDOWN: Final = "engine_shutdown"
#: Local only (never on the wire): our own connection to the engine went away.
WORKER_DISCONNECTED: Final = "worker_disconnected"

# --- ErrorBody codes: registrations and triggers --------------------------------------------

#: Another live worker already serves the function id (iii's code, ``registrationrejected``).
FUNCTION_NAMESPACE_CONFLICT: Final = "FUNCTION_NAMESPACE_CONFLICT"
#: Another live worker already provides the trigger type (sent in an ``error`` message).
TRIGGER_TYPE_CONFLICT: Final = "TRIGGER_TYPE_CONFLICT"
#: A binding the engine or its provider refused (iii's code).
TRIGGER_REGISTRATION_FAILED: Final = "trigger_registration_failed"
#: A binding's work crashed after it was registered.
TRIGGER_FAILED: Final = "trigger_failed"

# --- WebSocket close codes on channel sockets -----------------------------------------------

#: Clean end of stream: the writer closed with 1000 (or a Close with no status).
CLEAN_EOF: Final = 1000
#: The engine is shutting down.
CHANNEL_ENGINE_SHUTDOWN: Final = 1001
#: The writer aborted without giving its own code (our SDK's ``abort()`` default).
WRITER_ABORTED: Final = 4000
#: The writer's connection dropped without a Close frame; the data may be truncated.
WRITER_LOST: Final = 4001
#: Sent to the writer: the reader closed its end before the end of the stream.
READER_CLOSED: Final = 4002
#: Sent to the writer: the reader's connection dropped without a Close frame.
READER_LOST: Final = 4003
#: The other end never attached within the channel's TTL.
CHANNEL_EXPIRED: Final = 4004
