"""Our RFC 6455 layer: sans-IO framing (`_frames`, `_mask`, `_handshake`) under thin trio
transports (`_connection`, `_client`, `_server`). Built for the channel data path: large reads,
C masking, coalesced writes, no per-message task hops."""

from __future__ import annotations

from ._client import Dialer as Dialer
from ._client import connect_websocket as connect_websocket
from ._connection import ConnectionClosed as ConnectionClosed
from ._connection import WebSocket as WebSocket
from ._handshake import HandshakeError as HandshakeError
from ._handshake import HandshakeRequest as HandshakeRequest
from ._server import Accept as Accept
from ._server import Reject as Reject
from ._server import Router as Router
from ._server import handle_connection as handle_connection
from ._server import serve_websockets as serve_websockets
