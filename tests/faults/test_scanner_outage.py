"""A scanner offline for ten minutes, then back: its queued batches arrive, are all accepted, and
presence follows their timestamps: a visit that ended long ago is recorded as the visit it was,
and nobody's device is told today that someone entered ten minutes ago."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import select

from store_server import jobs
from store_server.db import sessions
from store_server.models import Device, Visit
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, backdated_stack, batch_body, eid_rows, signed

pytestmark = pytest.mark.faults
SCANNER = "demo-salon-scanner-1"
OFFLINE_S = 600


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The demo world whose consents were given an hour ago (before the outage)."""
    s = backdated_stack(tmp_path)
    yield s
    s.close()


def chair1_events(stack: Stack) -> list[dict]:
    """Events waiting for the chair 1 speaker."""
    with sessions(stack.app)() as db:
        device_id = db.scalar(select(Device.id).where(Device.name == "demo-chair-1-speaker"))
    raw = get_redis(stack.app).xrange(get_keys(stack.app).outbox(device_id))
    return [json.loads(fields["e"]) for _, fields in raw]


def test_queued_batches_arrive_and_count(stack):
    client = stack.app.test_client()
    start = time.time() - OFFLINE_S
    # What the scanner queued during the outage, sent oldest first when it is back.
    for k in range(5):
        rows = eid_rows(stack.world.emitters["alice"], start + 4 * k, 4, rssi=-50)
        body = batch_body(rows)
        resp = client.post(
            "/api/v1/sightings", data=body, headers=signed(SCANNER, stack.secret(SCANNER), body)
        )
        assert resp.status_code == 200 and resp.get_json() == {"accepted": 4, "duplicate": False}


def test_a_visit_long_over_is_recorded_not_pushed(stack):
    client = stack.app.test_client()
    start = time.time() - OFFLINE_S
    rows = eid_rows(stack.world.emitters["alice"], start, 10, rssi=-50)
    body = batch_body(rows)
    resp = client.post(
        "/api/v1/sightings", data=body, headers=signed(SCANNER, stack.secret(SCANNER), body)
    )
    assert resp.status_code == 200
    assert [e for e in chair1_events(stack) if e["type"] == "push"] == []
    r, keys = get_redis(stack.app), get_keys(stack.app)
    venue = get_topology(stack.app).scanner(SCANNER).venue_id
    assert list(r.hvals(keys.occupants(venue))) == ["chair-1"]
    jobs.sweep_once(stack.app)
    # The exit forgot her state, and her entry in the occupant index with it.
    assert r.hlen(keys.tracks(venue)) == 0 and r.hlen(keys.occupants(venue)) == 0
    with sessions(stack.app)() as db:
        visits = db.scalars(select(Visit)).all()
    assert len(visits) == 1
    # The visit carries the outage-time timestamps, not the time the batch arrived.
    ended = visits[0].ended_at
    ended = ended if ended.tzinfo else ended.replace(tzinfo=UTC)  # SQLite drops the zone
    assert abs(ended.timestamp() - (start + 9)) < 2
