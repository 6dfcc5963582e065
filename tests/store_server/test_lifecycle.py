"""What every store keeps once traffic has passed and time has run on: nothing grows without
bound. Visitors heard (consented and not), devices that received and acked, lost phones replaced,
an erasure, the exit sweeper and the retention round a year later; then every Redis key left must
expire by itself or be one of the few that exist once per deployment, venue or scanner, and SQL
must hold only the setup, the subscriber still consented and the erasure's tombstone."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from store_server import events, jobs, journal, retention, rights
from store_server.db import sessions
from store_server.models import (
    AuditEntry,
    Consent,
    EmitterKey,
    Scanner,
    Subscriber,
    Venue,
    Visit,
    utcnow,
)
from store_server.optin.models import UsedNonce
from store_server.redis_store import get_keys, get_redis
from tests.faults.support import Stack, batch_body, eid_rows, post_heartbeat, signed, stranger_rows

SCANNER = "demo-salon-scanner-1"


def _drive(stack: Stack, start: float) -> None:
    """Six batches of alice, bob and strangers through the API, each with a heartbeat."""
    client = stack.app.test_client()
    for i in range(6):
        t = start + 3 * i
        rows = eid_rows(stack.world.emitters["alice"], t, 3)
        rows += eid_rows(stack.world.emitters["bob"], t, 3) + stranger_rows(t, 3)
        body = batch_body(rows)
        headers = {
            **signed(SCANNER, stack.secret(SCANNER), body),
            "Content-Type": "application/json",
        }
        assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
        assert post_heartbeat(stack, SCANNER).status_code == 200


@pytest.mark.privacy
def test_after_traffic_and_a_year_only_bounded_state_is_left(stack: Stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    sio = app.extensions["socketio"]
    devices = [
        sio.test_client(app, namespace="/device", auth={"token": token})
        for token in stack.world.devices.values()
    ]
    now = time.time()
    _drive(stack, now)
    acked = 0
    for device in devices:
        for packet in device.get_received("/device"):
            for event in packet["args"]:
                if isinstance(event, dict) and "event_id" in event:
                    device.emit("ack", {"event_id": event["event_id"]}, namespace="/device")
                    acked += 1
    assert acked >= 2  # alice's and bob's pushes at least
    assert jobs.sweep_once(app, now=now + 3600) >= 1  # everyone left
    events.flush(app, min_age_s=0)
    journal.drain(app, min_age_s=0)
    with sessions(app)() as db:
        ids = dict(db.execute(select(Subscriber.directory_id, Subscriber.id)).all())
    for _lost_phone in range(2):
        rights.replace_emitter(app, ids["demo:bob"], issue_new=True)
    rights.erase(app, ids["demo:alice"])
    for device in devices:
        device.disconnect("/device")
    retention.run(app, now=utcnow() + timedelta(days=365))

    with sessions(app)() as db:
        venues = set(db.scalars(select(Venue.id)))
        scanners = set(db.scalars(select(Scanner.id)))
        # Bob is still consented: his row, his consent and his one live key, nothing older.
        assert db.scalars(select(Subscriber.id)).all() == [ids["demo:bob"]]
        assert db.scalar(select(func.count()).select_from(Consent)) == 1
        assert db.scalars(select(EmitterKey.revoked_at)).all() == [None]
        for model in (Visit, UsedNonce):
            assert db.scalar(select(func.count()).select_from(model)) == 0, model.__name__
        assert set(db.scalars(select(AuditEntry.action))) == {"erased"}
    # Kept without expiry, and bounded: one per deployment, per venue or per scanner.
    bounded = [
        (re.compile(r"resolver(:tickets)?|journal|events:pending"), lambda _m: True),
        (re.compile(r"dropped:(\d+)"), lambda m: int(m.group(1)) in venues),
        (re.compile(r"scanner:(\d+):health"), lambda m: int(m.group(1)) in scanners),
    ]
    for key in r.scan_iter(match=keys.pattern(), count=1000):
        name = key[len(keys.prefix) :]
        if r.ttl(key) >= 0:
            continue  # it expires by itself
        matched = [ok(m) for pattern, ok in bounded if (m := pattern.fullmatch(name))]
        assert matched and all(matched), f"{name} never expires"
    # What ends with the presences is gone, not merely expiring.
    assert r.zcard(keys.last_seen()) == 0 and r.xlen(keys.pending_events()) == 0
    assert r.xlen(keys.journal()) == 0
    for venue in venues:
        assert r.hlen(keys.tracks(venue)) == 0 and r.hlen(keys.occupants(venue)) == 0
