"""The orjson-backed Socket.IO packet encodes exactly what the library's own packet does, and a
long-polling payload may carry every packet a legitimate peer puts in one."""

from __future__ import annotations

import json

import pytest
from engineio import packet as eio_packet
from engineio.payload import Payload
from socketio.packet import BINARY_EVENT, EVENT, Packet

from store_server.sio_json import MAX_PAYLOAD_PACKETS, FastJSON, FastPacket

PAYLOADS = [
    ["event", {"type": "push", "subscriber": "abc", "expires_at": 1795.5, "tracks": [{"id": "t"}]}],
    ["queue", {"members": ["a", "b"], "queue": {"tracks": [], "genres": {"pop": 0.6}}}],
    ["hello", {"device": "Fauteuil é"}],
    ["odd", {1: "int keys go through the standard json module"}],
]


@pytest.mark.parametrize("data", PAYLOADS)
def test_encodes_like_the_library(data):
    fast = FastPacket(EVENT, data=data, namespace="/device", id=7)
    slow = Packet(EVENT, data=data, namespace="/device", id=7)
    assert fast.packet_type == slow.packet_type == EVENT
    assert json.loads(fast.encode()[len("2/device,7") :]) == json.loads(
        slow.encode()[len("2/device,7") :]
    )


def test_bytes_still_travel_as_binary_attachments():
    data = ["blob", {"raw": b"\x00\x01"}]
    fast = FastPacket(EVENT, data=data, namespace="/device")
    assert fast.packet_type == BINARY_EVENT
    assert fast.encode() == Packet(EVENT, data=data, namespace="/device").encode()


def test_round_trip_and_bad_input():
    text = FastJSON.dumps({"a": [1, 2.5, None, "é"]})
    assert FastJSON.loads(text) == {"a": [1, 2.5, None, "é"]}
    assert FastJSON.loads(b"[NaN]")[0] != 0  # the standard module's extension still parses
    with pytest.raises(ValueError):
        FastJSON.loads("{not json")


def test_a_polling_payload_may_hold_every_ack_one_post_can_carry(app):
    # The longest legitimate payloads: a full outbox replayed (at most OUTBOX_MAXLEN events;
    # the margin of a stream node is left from when trimming was approximate), and the acks for
    # it, as many as fit in one POST.
    eio = app.extensions["socketio"].server.eio
    ack = FastPacket(EVENT, ["ack", {"event_id": "17960488131234-99999"}], "/device", 99999)
    ack_bytes = len(eio_packet.Packet(eio_packet.MESSAGE, ack.encode()).encode()) + 1
    assert Payload.max_decode_packets >= MAX_PAYLOAD_PACKETS  # raised by create_app
    assert eio.max_http_buffer_size // ack_bytes < MAX_PAYLOAD_PACKETS
    assert app.config["OUTBOX_MAXLEN"] + 100 + 2 < MAX_PAYLOAD_PACKETS  # + hello, connect
