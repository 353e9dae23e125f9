"""iii_trio: a Trio-native iii engine and worker SDK, wire-compatible with iii.

The engine (:func:`open_engine`, :func:`serve_engine`) routes invocations between workers and
brokers channels; the worker SDK (:func:`connect_worker`) registers functions, triggers them
and streams bytes through channels (:class:`ChannelWriter`, :class:`ChannelReader`).
"""

from __future__ import annotations

from ._allocator import tune_allocator as tune_allocator
from ._errors import ConnectError as ConnectError
from ._errors import EngineUnreachable as EngineUnreachable
from ._errors import FunctionNotFound as FunctionNotFound
from ._errors import HandshakeRefused as HandshakeRefused
from ._errors import IIIError as IIIError
from ._errors import InvocationError as InvocationError
from ._errors import InvocationFailed as InvocationFailed
from ._errors import InvocationStopped as InvocationStopped
from ._errors import InvocationTimeout as InvocationTimeout
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RegistrationRejected as RegistrationRejected
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import Unauthorized as Unauthorized
from ._errors import WorkerDisconnected as WorkerDisconnected
from ._errors import WorkerOverloaded as WorkerOverloaded

#: The version of this iii_trio package.
from ._version import __version__ as __version__
from ._ws import Dialer as Dialer
from .engine import Engine as Engine
from .engine import EngineConfig as EngineConfig
from .engine import EngineStatistics as EngineStatistics
from .engine import LocalDialer as LocalDialer
from .engine import open_engine as open_engine
from .engine import serve_engine as serve_engine
from .protocol import JSON as JSON

#: How a call is routed: :class:`ActionVoid` (fire and forget: no result, no error) or
#: :class:`ActionEnqueue` (iii's queues; this engine answers ``enqueue_error``).
#: :meth:`Worker.trigger` also takes ``"void"`` and iii's ``{"type": "void"}``.
from .protocol import Action as Action
from .protocol import ActionEnqueue as ActionEnqueue
from .protocol import ActionVoid as ActionVoid

#: Which end of a channel a :class:`StreamChannelRef` opens: ``"read"`` or ``"write"``.
from .protocol import Direction as Direction
from .protocol import StreamChannelRef as StreamChannelRef
from .worker import Channel as Channel
from .worker import ChannelAborted as ChannelAborted
from .worker import ChannelBroken as ChannelBroken
from .worker import ChannelExpired as ChannelExpired
from .worker import ChannelLost as ChannelLost
from .worker import ChannelReader as ChannelReader
from .worker import ChannelReaderClosed as ChannelReaderClosed
from .worker import ChannelRefused as ChannelRefused
from .worker import ChannelWriter as ChannelWriter
from .worker import FunctionRef as FunctionRef
from .worker import HttpRequest as HttpRequest
from .worker import HttpResponse as HttpResponse
from .worker import ReaderCall as ReaderCall
from .worker import TriggerBinding as TriggerBinding
from .worker import TriggerError as TriggerError
from .worker import TriggerHandler as TriggerHandler
from .worker import TriggerRef as TriggerRef
from .worker import TriggerTypeRef as TriggerTypeRef
from .worker import Worker as Worker
from .worker import WriterCall as WriterCall
from .worker import connect_worker as connect_worker
from .worker import http_handler as http_handler
from .worker import receive_file as receive_file
from .worker import send_file as send_file

#: Called with each text message a :class:`ChannelReader` meets, in order with the data
#: (:meth:`ChannelReader.on_message`); an awaitable it returns is awaited.
from .worker._channels import MessageCallback as MessageCallback
from .worker._files import Progress as Progress

#: A function's handler: ``handler(payload)`` returns the result. The payload is the caller's
#: JSON with channel refs opened as :class:`ChannelReader` / :class:`ChannelWriter`; the
#: engine adds the caller's worker id to an object payload as ``"_caller_worker_id"``. A
#: coroutine function is awaited; a plain function runs on a worker thread.
from .worker._functions import Handler as Handler

#: A trio HTTP handler: ``await handler(request, response)`` (see :func:`http_handler`); it
#: may return iii's ``{"status_code", "headers", "body"}`` instead of writing ``response``.
from .worker._http import HttpHandler as HttpHandler

__all__ = [
    "JSON",
    "Action",
    "ActionEnqueue",
    "ActionVoid",
    "Channel",
    "ChannelAborted",
    "ChannelBroken",
    "ChannelExpired",
    "ChannelLost",
    "ChannelReader",
    "ChannelReaderClosed",
    "ChannelRefused",
    "ChannelWriter",
    "ConnectError",
    "Dialer",
    "Direction",
    "Engine",
    "EngineConfig",
    "EngineStatistics",
    "EngineUnreachable",
    "FunctionNotFound",
    "FunctionRef",
    "Handler",
    "HandshakeRefused",
    "HttpHandler",
    "HttpRequest",
    "HttpResponse",
    "IIIError",
    "InvocationError",
    "InvocationFailed",
    "InvocationStopped",
    "InvocationTimeout",
    "LocalDialer",
    "LocalProtocolError",
    "MessageCallback",
    "Progress",
    "ProtocolError",
    "ReaderCall",
    "RegistrationRejected",
    "RemoteProtocolError",
    "StreamChannelRef",
    "TriggerBinding",
    "TriggerError",
    "TriggerHandler",
    "TriggerRef",
    "TriggerTypeRef",
    "Unauthorized",
    "Worker",
    "WorkerDisconnected",
    "WorkerOverloaded",
    "WriterCall",
    "__version__",
    "connect_worker",
    "http_handler",
    "open_engine",
    "receive_file",
    "send_file",
    "serve_engine",
    "tune_allocator",
]
