"""A scanner whose clock runs off: its sightings are restamped on the server's clock, so
presence (ended on the server's clock) neither forgets a visitor nor keeps one (real HTTP
test client, Redis and SQL)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from store_server import ingest, jobs
from store_server.db import sessions
from store_server.models import Consent, Subscriber
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed

CAR = "demo-car-scanner"


def _last_heard(stack: Stack, scanner_clock: float, stamped: float) -> float:
    """Post alice's sightings stamped `stamped`, sent by a scanner whose clock reads
    `scanner_clock` now; returns when the sweeper's index says she was last heard."""
    app = stack.app
    body = batch_body(eid_rows(stack.world.emitters["alice"], stamped, 3, -50.0))
    headers = signed(CAR, stack.secret(CAR), body, now=scanner_clock)
    res = app.test_client().post("/api/v1/sightings", data=body, headers=headers)
    assert res.status_code == 200 and res.get_json()["accepted"] == 3, res.get_json()
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
    venue = get_topology(app).scanner(CAR).venue_id
    return get_redis(app).zscore(get_keys(app).last_seen(), f"{venue}:{alice}")


@pytest.mark.parametrize("skew", [-100.0, -10.0, 120.0])
def test_a_scanner_clock_off_by_seconds_or_minutes_is_read_on_ours(stack, skew):
    now = time.time()
    # Stamped before her consent began, a slow scanner's sightings were dropped; stamped ahead,
    # a fast one's kept her present minutes after she left.
    heard = _last_heard(stack, now + skew, now + skew)
    assert heard is not None and abs(heard - now) < 4.0


def test_a_backlog_from_a_scanner_on_time_keeps_its_own_times(stack):
    with sessions(stack.app)() as db:
        for consent in db.scalars(select(Consent)):
            consent.valid_from -= timedelta(hours=1)  # she opted in before the backlog began
        db.commit()
    jobs.refresh_resolver(stack.app)
    now = time.time()
    heard = _last_heard(stack, now, now - 30.0)
    assert heard is not None and abs(heard - (now - 30.0)) < 4.0


def test_a_clock_within_the_trusted_error_is_taken_as_it_is():
    rows = [ingest.Sighting(100.0, "eid", "ab" * 8, -50.0, None)]
    assert ingest.on_server_clock(rows, 1.5) is rows
    assert ingest.on_server_clock(rows, 10.0)[0].ts == 90.0
