"""Device namespace through the in-process Socket.IO test client: auth, replay and acks."""

from __future__ import annotations

import time

from store_server import outbox
from store_server.redis_store import get_keys, get_redis
from store_server.seed import seed_demo


def test_device_without_valid_token_is_refused(sio_client):
    assert not sio_client(auth=None).is_connected("/device")
    assert not sio_client(auth={"token": "x" * 40}).is_connected("/device")


def test_revoked_token_is_refused_and_fresh_one_accepted(app, db, sio_client):
    world = seed_demo(db, app.config["DATA_KEY"])
    token = world.devices["demo-chair-2-speaker"]
    c = sio_client(auth={"token": token})
    assert c.is_connected("/device")
    assert c.get_received("/device")[0]["name"] == "hello"
    world2 = seed_demo(db, app.config["DATA_KEY"])  # rotates every demo device token
    assert not sio_client(auth={"token": token}).is_connected("/device")
    assert sio_client(auth={"token": world2.devices["demo-chair-2-speaker"]}).is_connected(
        "/device"
    )


def test_pending_events_replay_on_connect_revokes_first_and_ack_removes(app, db, sio_client):
    world = seed_demo(db, app.config["DATA_KEY"])
    from sqlalchemy import select

    from store_server.models import Device

    device = db.scalar(select(Device).where(Device.name == "demo-car-tablet"))
    r, keys = get_redis(app), get_keys(app)
    r.delete(keys.outbox(device.id))
    later = time.time() + 60
    ids = outbox.append_many(
        r,
        keys,
        [
            (device.id, {"type": "push", "subscriber": "p1", "expires_at": later}),
            (device.id, {"type": "push", "subscriber": "p2", "expires_at": time.time() - 1}),
            (device.id, {"type": "revoke", "subscriber": "p3", "reason": "absent"}),
        ],
        100,
        60,
    )
    c = sio_client(auth={"token": world.devices["demo-car-tablet"]})
    got = [e["args"][0] for e in c.get_received("/device") if e["name"] == "event"]
    assert [(e["type"], e["subscriber"]) for e in got] == [("revoke", "p3"), ("push", "p1")]
    assert c.emit("ack", {"event_id": ids[0]}, namespace="/device", callback=True) == {"ok": True}
    bad = c.emit("ack", {"event_id": "nope"}, namespace="/device", callback=True)
    assert bad["ok"] is False
    remaining = [e["subscriber"] for e in outbox.pending(r, keys, device.id, time.time())]
    assert remaining == ["p3"]
    r.delete(keys.outbox(device.id))  # leave no events for other tests' devices
