"""The iii wire protocol, sans-IO: message classes and the JSON codec. Imports no trio."""

from __future__ import annotations

from .._codes import CHANNEL_ENGINE_SHUTDOWN as CHANNEL_ENGINE_SHUTDOWN
from .._codes import CHANNEL_EXPIRED as CHANNEL_EXPIRED
from .._codes import CLEAN_EOF as CLEAN_EOF
from .._codes import READER_CLOSED as READER_CLOSED
from .._codes import READER_LOST as READER_LOST
from .._codes import WRITER_ABORTED as WRITER_ABORTED
from .._codes import WRITER_LOST as WRITER_LOST
from ._codec import UNKNOWN_TYPE as UNKNOWN_TYPE
from ._codec import decode as decode
from ._codec import dumps as dumps
from ._codec import encode as encode
from ._codec import is_channel_ref as is_channel_ref
from ._codec import is_ignored_tag as is_ignored_tag
from ._codec import loads as loads
from ._codec import structure as structure
from ._codec import structure_ref as structure_ref
from ._codec import unstructure as unstructure
from ._codec import unstructure_ref as unstructure_ref
from ._ids import new_uuid as new_uuid
from ._messages import JSON as JSON
from ._messages import WIRE_NAMES as WIRE_NAMES
from ._messages import Action as Action
from ._messages import ActionEnqueue as ActionEnqueue
from ._messages import ActionVoid as ActionVoid
from ._messages import Direction as Direction
from ._messages import Error as Error
from ._messages import ErrorBody as ErrorBody
from ._messages import InvocationResult as InvocationResult
from ._messages import InvokeFunction as InvokeFunction
from ._messages import Message as Message
from ._messages import Ping as Ping
from ._messages import Pong as Pong
from ._messages import Reattach as Reattach
from ._messages import RegisterFunction as RegisterFunction
from ._messages import RegisterService as RegisterService
from ._messages import RegisterTrigger as RegisterTrigger
from ._messages import RegisterTriggerType as RegisterTriggerType
from ._messages import RegistrationRejected as RegistrationRejected
from ._messages import StreamChannelRef as StreamChannelRef
from ._messages import TriggerRegistrationResult as TriggerRegistrationResult
from ._messages import UnregisterFunction as UnregisterFunction
from ._messages import UnregisterTrigger as UnregisterTrigger
from ._messages import UnregisterTriggerType as UnregisterTriggerType
from ._messages import WorkerRegistered as WorkerRegistered
