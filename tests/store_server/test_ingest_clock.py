"""A scanner whose clock runs off: its sightings are restamped on the server's clock, so
presence (ended on the server's clock) neither forgets a visitor nor keeps one (real HTTP
test client, Redis and SQL)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update

from store_server import ingest, jobs
from store_server.db import sessions
from store_server.models import Consent, Subscriber, Zone
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed

CAR = "demo-car-scanner"


def _post(stack: Stack, rows: list[dict[str, Any]], scanner_clock: float | None = None) -> int:
    """Post one batch from the car's scanner, its clock reading `scanner_clock` (by default
    ours) as it sends; returns how many sightings the server accepted."""
    body = batch_body(rows)
    headers = signed(CAR, stack.secret(CAR), body, now=scanner_clock)
    res = stack.app.test_client().post("/api/v1/sightings", data=body, headers=headers)
    assert res.status_code == 200, res.get_json()
    return res.get_json()["accepted"]


def _alice(stack: Stack) -> tuple[int, str]:
    """The car's venue and alice's subscriber id (a field of its tracking states)."""
    with sessions(stack.app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
    return get_topology(stack.app).scanner(CAR).venue_id, str(alice)


def _opted_in_an_hour_ago(stack: Stack) -> None:
    with sessions(stack.app)() as db:
        for consent in db.scalars(select(Consent)):
            consent.valid_from -= timedelta(hours=1)
        db.commit()
    jobs.refresh_resolver(stack.app)


def _last_heard(stack: Stack, scanner_clock: float, stamped: float) -> float:
    """Post alice's sightings, the last stamped `stamped`, sent by a scanner whose clock reads
    `scanner_clock` now; returns when the sweeper's index says she was last heard."""
    rows = eid_rows(stack.world.emitters["alice"], stamped - 2, 3, -50.0)
    assert _post(stack, rows, scanner_clock) == 3
    venue, alice = _alice(stack)
    return get_redis(stack.app).zscore(get_keys(stack.app).last_seen(), f"{venue}:{alice}")


@pytest.mark.parametrize("skew", [-100.0, -10.0, 120.0])
def test_a_scanner_clock_off_by_seconds_or_minutes_is_read_on_ours(stack, skew):
    now = time.time()
    # Stamped before her consent began, a slow scanner's sightings were dropped; stamped ahead,
    # a fast one's kept her present minutes after she left.
    heard = _last_heard(stack, now + skew, now + skew)
    assert heard is not None and abs(heard - now) < 4.0


def test_a_backlog_from_a_scanner_on_time_keeps_its_own_times(stack):
    _opted_in_an_hour_ago(stack)  # before the backlog began
    now = time.time()
    heard = _last_heard(stack, now, now - 30.0)
    assert heard is not None and abs(heard - (now - 30.0)) < 4.0


def test_a_clock_within_the_trusted_error_is_taken_as_it_is():
    rows = [ingest.Sighting(100.0, "eid", "ab" * 8, -50.0, None)]
    assert ingest.on_server_clock(rows, 1.5) is rows
    assert ingest.on_server_clock(rows, 10.0)[0].ts == 90.0


def test_rows_stamped_after_the_send_time_are_dropped_beyond_its_rounding():
    rows = [ingest.Sighting(t, "eid", "ab" * 8, -50.0, None) for t in (99.0, 101.9, 102.1, 400.0)]
    # sent at 100 on the scanner's clock (ours 100 too): whole seconds, so 2 s of rounding
    kept = ingest.on_server_clock(rows, 0.0, now=100.0)
    assert [s.ts for s in kept] == [99.0, 101.9]
    # a scanner 50 s slow sent at 50 on its clock: judged on its clock, then read on ours
    slow = [s._replace(ts=s.ts - 50.0) for s in rows]
    assert [s.ts for s in ingest.on_server_clock(slow, -50.0, now=100.0)] == [99.0, 101.9]
    assert len(ingest.on_server_clock(rows, 0.0, now=100.0, ahead_s=60.0)) == 3


# A scanner's clock stepped back four minutes between hearing alice and sending: the batch's
# signed send time is right (no restamping), one reading is stamped four minutes after it.
AHEAD_S = 240.0


def test_a_sighting_stamped_after_its_batch_was_sent_does_not_keep_her_present(stack):
    stack.app.config["INGEST_ROW_AHEAD_S"] = ingest.CLOCK_TRUST_S  # production's
    _opted_in_an_hour_ago(stack)
    with sessions(stack.app)() as db:
        db.execute(update(Zone).values(enter_stable_s=1.0))  # each batch is folded at once
        db.commit()
    get_topology(stack.app).invalidate()
    alice, app = stack.world.emitters["alice"], stack.app
    venue, sub = _alice(stack)
    r, keys = get_redis(app), get_keys(app)
    now = time.time()
    rows = eid_rows(alice, now - 4, 4, -50.0) + eid_rows(alice, now + AHEAD_S, 1, -50.0)
    # The readings of before the step still count and place her; the one stamped ahead does not.
    assert _post(stack, rows) == 4
    assert r.hget(keys.occupants(venue), sub) == "cabin"
    heard = r.zscore(keys.last_seen(), f"{venue}:{sub}")
    assert heard is not None and now - 4 < heard <= now
    # She left after them: her presence ends then, not four minutes later.
    assert jobs.sweep_once(app, now=now + 10) == 1
    assert r.hget(keys.occupants(venue), sub) is None


def test_a_sighting_stamped_after_its_batch_was_sent_does_not_freeze_her_tracking(stack):
    stack.app.config["INGEST_ROW_AHEAD_S"] = ingest.CLOCK_TRUST_S  # production's
    _opted_in_an_hour_ago(stack)
    alice, app = stack.world.emitters["alice"], stack.app
    venue, sub = _alice(stack)
    r, keys = get_redis(app), get_keys(app)
    # Her seconds, heard and sent (on time) in the last half minute, one batch a second.
    start = time.time() - 30.0
    for s in range(8):
        assert _post(stack, eid_rows(alice, start + s, 1, -50.0)) == 1
    assert r.hget(keys.occupants(venue), sub) == "cabin"
    rows = eid_rows(alice, start + 8, 1, -50.0) + eid_rows(alice, time.time() + AHEAD_S, 1)
    assert _post(stack, rows) == 1
    for s in range(9, 20):
        assert _post(stack, eid_rows(alice, start + s, 1, -50.0)) == 1
    # Every second was estimated, and she is still in the cabin as her last readings say: the
    # reading stamped ahead would have held the tracker minutes ahead, nothing after it
    # estimated, and the sweeper would have seen her absent.
    state = orjson.loads(r.hget(keys.tracks(venue), sub))
    assert start + 17 <= state["k"] <= start + 19
    assert jobs.sweep_once(app, now=start + 19.5) == 0
    assert r.hget(keys.occupants(venue), sub) == "cabin"
