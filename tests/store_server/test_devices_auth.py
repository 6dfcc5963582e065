"""Device authentication on a real server: every refusal says why, and tokens rotate over the
live connection without a gap."""

from __future__ import annotations

from typing import Any

import pytest
import socketio

from store_server.device_client import NAMESPACE, DeviceConnection, SerialClient
from store_server.models import Device, Merchant
from store_server.topology import get_topology
from tests.store_server.test_push_e2e import Device as PushDevice
from tests.store_server.test_push_e2e import build_world, enter

pytestmark = [pytest.mark.e2e, pytest.mark.authz]


def refusal(url: str, auth: Any) -> str:
    """Try to connect; return the reason the server gave for refusing."""
    details: list[Any] = []
    sio = SerialClient(reconnection=False)
    sio.on("connect_error", lambda *d: details.extend(d), namespace=NAMESPACE)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(url, namespaces=[NAMESPACE], auth=auth, wait_timeout=10)
    assert len(details) == 1, details
    assert details[0]["message"] == details[0]["data"]["reason"]
    return details[0]["data"]["reason"]


def test_refusals_each_give_a_clear_reason(app, live_server, db):
    world = build_world(app, db, zones=("a", "b", "c"), people=())
    url = live_server.url
    assert refusal(url, None) == "missing or malformed device token"
    assert refusal(url, {"token": "short"}) == "missing or malformed device token"
    assert refusal(url, {"token": 42}) == "missing or malformed device token"
    assert refusal(url, {"token": "x" * 43}) == "unknown or revoked device token"
    # Lone surrogates cannot be encoded to be hashed: the handler raised and the client hung.
    assert refusal(url, {"token": "\ud800" * 25}) == "missing or malformed device token"
    assert refusal(url, {"token": "\u00e9" * 30}) == "missing or malformed device token"

    db.get(Device, world.devices["b"][0][0]).revoked_at = db.get(
        Merchant, world.merchant_id
    ).created_at
    db.commit()
    assert refusal(url, {"token": world.token("b")}) == "unknown or revoked device token"

    db.get(Merchant, world.merchant_id).status = "suspended"
    db.commit()
    assert refusal(url, {"token": world.token("c")}) == "merchant suspended"
    db.get(Merchant, world.merchant_id).status = "active"
    db.commit()
    accepted = DeviceConnection(url, world.token("c"), lambda *_: None)
    hello: list[Any] = []
    accepted.sio.on("hello", hello.append, namespace=NAMESPACE)
    accepted.connect()
    accepted.sync()
    assert hello and hello[0]["device"].startswith("dev-")
    accepted.close()


def test_rotation_keeps_the_connection_and_retires_the_old_token(app, live_server, db):
    world = build_world(app, db, people=(("rob", "playlist"),))
    old = world.token("seat")
    dev = PushDevice(live_server.url, old)
    try:
        new = dev.conn.rotate()
        assert new != old and len(new) >= 40
        # Still connected and still served: no downtime for the player.
        enter(live_server.url, world, "seat", "rob")
        assert dev.next()["subscriber"] == world.pseudonym("rob")
        assert refusal(live_server.url, {"token": old}) == "unknown or revoked device token"
        again = PushDevice(live_server.url, new)
        again.close()
    finally:
        dev.close()


def test_revoked_while_connected_cannot_rotate_itself_back(app, live_server, db):
    world = build_world(app, db, people=())
    dev = PushDevice(live_server.url, world.token("seat"))
    try:
        row = db.get(Device, world.devices["seat"][0][0])
        row.revoked_at = db.get(Merchant, world.merchant_id).created_at
        db.commit()
        get_topology(app).invalidate()
        with pytest.raises(RuntimeError, match="refused"):
            dev.conn.rotate()
        db.refresh(row)
        assert row.revoked_at is not None
    finally:
        dev.close()
