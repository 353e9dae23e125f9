"""Our RFC 6455 layer: sans-IO framing (`_frames`, `_mask`, `_handshake`) under thin trio
transports (`_connection`, `_client`, `_server`). Built for the channel data path: large reads,
C masking, coalesced writes, no per-message task hops. `_memory` offers the same message
interface (`_socket.MessageSocket`) between two tasks of one process, passing objects by
reference."""

from __future__ import annotations

from ._client import Dialer as Dialer
from ._client import MessageDialer as MessageDialer
from ._client import connect_message_socket as connect_message_socket
from ._client import connect_websocket as connect_websocket
from ._closing import ConnectionClosed as ConnectionClosed
from ._connection import WebSocket as WebSocket
from ._handshake import HandshakeError as HandshakeError
from ._handshake import HandshakeRequest as HandshakeRequest
from ._memory import MemoryWebSocket as MemoryWebSocket
from ._memory import memory_websocket_pair as memory_websocket_pair
from ._outbox import Outbox as Outbox
from ._outbox import OutboxStatistics as OutboxStatistics
from ._server import Accept as Accept
from ._server import Reject as Reject
from ._server import Router as Router
from ._server import handle_connection as handle_connection
from ._server import open_memory_websocket as open_memory_websocket
from ._server import serve_websockets as serve_websockets
from ._socket import MessageSocket as MessageSocket
