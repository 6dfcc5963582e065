"""Socket.IO packets encoded with orjson, and how many of them one long-polling payload carries.

python-socketio walks every outgoing payload in Python to look for binary attachments and then
encodes it with the standard json module; with blended queues of dozens of tracks going to every
device of a zone, the two were measured at about a fifth of a loaded server's time. Our payloads
are plain JSON, so one orjson pass answers both questions; anything orjson cannot encode (bytes,
non-string keys) falls back to the library's own code, so behaviour is unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from engineio.payload import Payload
from socketio.packet import Packet

# python-engineio decodes at most 16 packets per long-polling payload, in its server (a POST)
# and its client (a GET), and drops the whole payload past that. Over polling (behind a proxy
# that refuses websockets) a device is sent every packet queued for it in one GET, and a client
# posts all it has queued in one POST (the browser splits only by bytes): a replay of more than
# 16 events on reconnect, or a group entering a zone at once, made the Python device drop the
# connection (and meet the same replay at every reconnect), and the server drop the acks for
# them while answering 200 (the events stayed pending). Websocket frames carry one packet each,
# so the count bounded nothing there, and a POST stays bounded by max_http_buffer_size (1 MB):
# 20,000 is above the acks that fit in one (58 bytes each) and a full outbox's replay
# (OUTBOX_MAXLEN, 1,000 by default).
MAX_PAYLOAD_PACKETS = 20_000


class FastJSON:
    """The `dumps`/`loads` pair python-socketio and python-engineio call, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        """Compact JSON text (orjson's output is already compact)."""
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, *args, **kwargs)

    @staticmethod
    def loads(s: str | bytes, *args: Any, **kwargs: Any) -> Any:
        """Parse JSON text; invalid input raises ValueError as json.loads does."""
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return json.loads(s, *args, **kwargs)


class FastPacket(Packet):
    """A Socket.IO packet whose binary check is one C-speed encoding attempt."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        """True if the payload holds bytes (then the library's binary attachments apply)."""
        try:
            orjson.dumps(data)
        except TypeError:
            return super().data_is_binary(data)
        return False


def allow_long_payloads() -> None:
    """Let a long-polling payload carry up to MAX_PAYLOAD_PACKETS packets, for every Engine.IO
    server and client of this process (python-engineio keeps the limit on its Payload class)."""
    Payload.max_decode_packets = max(Payload.max_decode_packets, MAX_PAYLOAD_PACKETS)
