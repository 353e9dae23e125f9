"""The trio worker SDK: connect, register functions, trigger, stream through channels."""

from __future__ import annotations

from ._channel_errors import ChannelAborted as ChannelAborted
from ._channel_errors import ChannelBroken as ChannelBroken
from ._channel_errors import ChannelExpired as ChannelExpired
from ._channel_errors import ChannelLost as ChannelLost
from ._channel_errors import ChannelReaderClosed as ChannelReaderClosed
from ._channel_errors import ChannelRefused as ChannelRefused
from ._channels import Channel as Channel
from ._channels import ChannelReader as ChannelReader
from ._channels import ChannelWriter as ChannelWriter
from ._connect_worker import connect_worker as connect_worker
from ._files import receive_file as receive_file
from ._files import send_file as send_file
from ._http import HttpHandler as HttpHandler
from ._http import HttpRequest as HttpRequest
from ._http import HttpResponse as HttpResponse
from ._http import http_handler as http_handler
from ._streaming import ReaderCall as ReaderCall
from ._streaming import WriterCall as WriterCall
from ._triggers import TriggerBinding as TriggerBinding
from ._triggers import TriggerError as TriggerError
from ._triggers import TriggerHandler as TriggerHandler
from ._triggers import TriggerRef as TriggerRef
from ._triggers import TriggerTypeRef as TriggerTypeRef
from ._worker import DEFAULT_URL as DEFAULT_URL
from ._worker import FunctionRef as FunctionRef
from ._worker import Worker as Worker
