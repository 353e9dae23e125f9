"""Channel ends as trio streams: :class:`ChannelWriter` (a ``trio.abc.SendStream``) and
:class:`ChannelReader` (a ``trio.abc.ReceiveStream``).

Theory of operation
-------------------
Each end is one WebSocket to the engine's ``/ws/channels/{id}``, opened lazily on first use
(or by ``aclose``, so a writer closed before it wrote still delivers a clean EOF, and a reader
closed unread still tells the writer). Binary frames carry data, text frames carry messages;
both keep their order.

The reader runs a pump task that moves frames from the socket into a bounded memory channel;
``receive_some`` takes them from there. Over an in-process socket (``Engine.local_dialer``)
``receive_some`` reads the socket itself, whose queue is bounded too, and the pump task only
owns the socket. The writer writes frames directly (``send_all`` →
frames of at most ``chunk_size`` bytes, coalesced into few socket writes) and runs a watcher
task that reads the socket, so a reader that leaves is noticed even while the writer is idle.
The tasks live in the nursery that owns the end: the invocation's, the worker's, or an
:func:`open_channel` block's.

End states: the reader returns ``b""`` only after the engine's close 1000 (or 1005, which is
all an original iii engine ever sends). Any other close raises a :class:`ChannelBroken`
subclass that carries the code and reason.
"""

from __future__ import annotations

import attrs

from ..protocol import StreamChannelRef
from ._channel_ends import ChannelEndpoint as ChannelEndpoint
from ._channel_reader import ChannelReader as ChannelReader
from ._channel_reader import MessageCallback as MessageCallback
from ._channel_writer import ChannelWriter as ChannelWriter


@attrs.frozen
class Channel:
    """A channel made by this worker: local ends plus the refs to hand to others.

    Attributes:
        writer: the local write end.
        reader: the local read end.
        writer_ref: the serializable ref of the write end, to put in a payload.
        reader_ref: the serializable ref of the read end, to put in a payload.
    """

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: StreamChannelRef
    reader_ref: StreamChannelRef

    @property
    def last_progress(self) -> float:
        """Clock time either local end last moved data (a call's deadline follows it)."""
        return max(self.writer.last_progress, self.reader.last_progress)
