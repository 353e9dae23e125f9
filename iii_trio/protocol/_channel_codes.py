"""Close codes on channel sockets (see docs/close-codes.md). Shared by engine and SDK."""

from __future__ import annotations

from typing import Final

#: Clean end of stream: the writer closed with 1000 (or a Close with no status).
CLEAN_EOF: Final = 1000
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
#: The engine is shutting down.
ENGINE_SHUTDOWN: Final = 1001
