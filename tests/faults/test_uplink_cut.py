"""A venue's uplink cut for less than it takes to call its scanners silent: the scanners queue
what they hear, and the visitor they still hear is not taken to have left. The sweeper judges
absence up to the time the scanners that heard her last reported (`through` in their
heartbeats), so no revoke goes out during the cut and no second push after it. Real Redis and
SQL, signed batches and heartbeats through the HTTP API, the sweeper's own rounds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from beacons.daemon import ScannerDaemon
from beacons.simulator import Leg, SimEmitter, World
from beacons.sources.simulated import SimulatedSource
from store_server import jobs, scanner_health
from store_server.db import sessions
from store_server.models import AuditEntry, Subscriber, Zone
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.beacons.test_daemon_store_server import Served
from tests.conftest import free_port
from tests.faults.support import (
    Stack,
    backdated_stack,
    batch_body,
    eid_rows,
    post_heartbeat,
    signed,
    stranger_rows,
    wait_for,
)

pytestmark = pytest.mark.faults
FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"
LOUD = {FIRST: -52.0, SECOND: -66.0}  # alice in chair 1 (its absence time: 4 s)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The demo world whose consents were given an hour ago, on a database and key prefix of
    this test's own (the tests replay the last minute or so)."""
    s = backdated_stack(tmp_path)
    yield s
    s.close()


def _through(stack: Stack, at: float) -> None:
    """Both scanners report that they delivered everything they heard before `at`."""
    for scanner in (FIRST, SECOND):
        res = post_heartbeat(stack, scanner, through=at)
        assert res.status_code == 200, res.get_json()


def _heard(stack: Stack, start: float, n: int) -> None:
    """n seconds of alice in chair 1 from `start`, one batch per scanner (a backlog, if old)."""
    client = stack.app.test_client()
    for scanner, level in LOUD.items():
        body = batch_body(eid_rows(stack.world.emitters["alice"], start, n, level))
        headers = signed(scanner, stack.secret(scanner), body)
        assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200


def _pushes(stack: Stack) -> list[tuple[str, str]]:
    with sessions(stack.app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
        rows = db.execute(
            select(AuditEntry.action, AuditEntry.reason)
            .where(AuditEntry.subscriber_id == alice, AuditEntry.action.in_(("push", "revoke")))
            .order_by(AuditEntry.id)
        ).all()
    return [(a, r or "") for a, r in rows]


def _seated(stack: Stack, t0: float) -> None:
    """Alice heard in chair 1 for 8 s from t0, each second delivered and swept as it comes."""
    for s in range(8):
        _heard(stack, t0 + s, 1)
        _through(stack, t0 + s + 0.5)
        jobs.sweep_once(stack.app, now=t0 + s + 0.6)
    assert [a for a, _ in _pushes(stack)] == ["push"]


def _occupant(stack: Stack) -> str | None:
    r, keys = get_redis(stack.app), get_keys(stack.app)
    salon = get_topology(stack.app).scanner(FIRST).venue_id
    occupants = r.hgetall(keys.occupants(salon))
    return next(iter(occupants.values()), None)


def test_a_cut_uplink_is_not_taken_for_the_visitor_leaving(stack):
    t0 = time.time() - 40
    _seated(stack, t0)
    # The uplink goes: nothing more arrives. 13 s later (her chair lets go after 4 s of
    # absence) the sweeper still waits for the scanners' word.
    for now in (t0 + 12, t0 + 16, t0 + 20):
        jobs.sweep_once(stack.app, now=now)
    assert _pushes(stack) == [("push", "")] and _occupant(stack) == "chair-1"
    # Back: the queued batches arrive (she never left), then the heartbeats saying so.
    _heard(stack, t0 + 8, 14)
    _through(stack, t0 + 21.5)
    jobs.sweep_once(stack.app, now=t0 + 21.6)
    assert _pushes(stack) == [("push", "")] and _occupant(stack) == "chair-1"
    # Now she does leave (last heard at t0 + 21): once the scanners have reported 4 s
    # without her, she is gone (her last second's estimate waits for the next one, so her
    # presence may end at t0 + 20 already; the bounds allow for either).
    _through(stack, t0 + 23.9)
    jobs.sweep_once(stack.app, now=t0 + 24)
    assert _occupant(stack) == "chair-1"
    _through(stack, t0 + 25.1)
    jobs.sweep_once(stack.app, now=t0 + 25.2)
    assert _pushes(stack) == [("push", ""), ("revoke", "absent")] and _occupant(stack) is None


def test_her_chairs_own_scanner_cut_holds_her_after_her_tracker_forgot_it(stack):
    t0 = time.time() - 50
    _seated(stack, t0)
    client = stack.app.test_client()
    # Chair 1's scanner is cut off; chair 2's, further away, still hears her for 16 s: long
    # enough for her tracker to forget the silent one (10 s).
    for s in range(8, 24):
        body = batch_body(eid_rows(stack.world.emitters["alice"], t0 + s, 1, LOUD[SECOND]))
        headers = signed(SECOND, stack.secret(SECOND), body)
        assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
        assert post_heartbeat(stack, SECOND, through=t0 + s + 0.5).status_code == 200
        jobs.sweep_once(stack.app, now=t0 + s + 0.6)
    # Then chair 2's loses her too (she turned in her chair); her chair's own scanner has
    # said nothing since the cut, so her absence is not judged on chair 2's word alone.
    for now in (t0 + 28, t0 + 30):
        assert post_heartbeat(stack, SECOND, through=now - 0.5).status_code == 200
        jobs.sweep_once(stack.app, now=now)
    assert _pushes(stack) == [("push", "")] and _occupant(stack) == "chair-1"
    # Chair 1's queue arrives: she never left.
    body = batch_body(eid_rows(stack.world.emitters["alice"], t0 + 8, 23, LOUD[FIRST]))
    headers = signed(FIRST, stack.secret(FIRST), body)
    assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    _through(stack, t0 + 31.5)
    jobs.sweep_once(stack.app, now=t0 + 31.6)
    assert _pushes(stack) == [("push", "")] and _occupant(stack) == "chair-1"


def test_without_a_report_from_the_scanners_she_still_leaves_once_they_are_silent(stack):
    t0 = time.time() - 50
    _seated(stack, t0)
    # The scanners' word stops at t0 + 7.5 and never comes again; past the silence window
    # their zone goes dark and she is let go, rather than kept present for ever.
    jobs.sweep_once(stack.app, now=t0 + 7.5 + scanner_health.SILENT_AFTER_S)
    assert _occupant(stack) == "chair-1"
    post_heartbeat(stack, FIRST, adapter="down")
    post_heartbeat(stack, SECOND, adapter="down")
    assert jobs.publish_dark(stack.app)
    get_topology(stack.app).dark.clear()
    jobs.sweep_once(stack.app, now=t0 + 8 + scanner_health.SILENT_AFTER_S + 1)
    assert _pushes(stack)[-1][0] == "revoke" and _occupant(stack) is None


def test_a_report_without_through_no_longer_holds_anyone(stack):
    t0 = time.time() - 40
    _seated(stack, t0)
    jobs.sweep_once(stack.app, now=t0 + 20)
    assert _occupant(stack) == "chair-1"
    # The scanners were replaced by daemons that do not say `through`: absence is judged on
    # the server's clock again, as it always was for them.
    for scanner in (FIRST, SECOND):
        assert post_heartbeat(stack, scanner).status_code == 200
    jobs.sweep_once(stack.app, now=t0 + 20)
    assert _pushes(stack) == [("push", ""), ("revoke", "absent")] and _occupant(stack) is None


def test_a_batch_moves_the_word_on_for_a_scanner_that_says_through(stack):
    r, keys, topo = get_redis(stack.app), get_keys(stack.app), get_topology(stack.app)
    first, second = (keys.scanner_health(topo.scanner(n).id) for n in (FIRST, SECOND))
    t0 = time.time() - 40
    assert post_heartbeat(stack, FIRST, through=t0).status_code == 200
    assert post_heartbeat(stack, SECOND).status_code == 200  # an older daemon: no `through`
    # Batches go oldest first, one at a time: everything before the first frame is in.
    _heard(stack, t0 + 5, 4)
    assert float(r.hget(first, "through")) == pytest.approx(t0 + 5 - 0.5, abs=1e-3)
    assert r.hget(second, "through") is None  # judged on the server's clock, as before
    # A later batch of older frames never moves it back.
    _heard(stack, t0 + 1, 2)
    assert float(r.hget(first, "through")) == pytest.approx(t0 + 5 - 0.5, abs=1e-3)
    # Frames of people who never consented count as heard too (their times only, kept as the
    # scanner's word, never who they were).
    client = stack.app.test_client()
    body = batch_body(stranger_rows(t0 + 12, 3))
    headers = signed(FIRST, stack.secret(FIRST), body)
    assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    assert float(r.hget(first, "through")) == pytest.approx(t0 + 12 - 0.5, abs=1e-3)


def test_through_is_kept_on_the_servers_clock(stack):
    r, keys = get_redis(stack.app), get_keys(stack.app)
    sid = get_topology(stack.app).scanner(FIRST).id
    now = time.time()
    assert post_heartbeat(stack, FIRST, through=now - 3).status_code == 200
    assert abs(float(r.hget(keys.scanner_health(sid), "through")) - (now - 3)) < 0.01
    # A scanner whose clock runs 100 s fast: its times are ours plus 100.
    body = json.dumps({"adapter": "up", "through": now + 97}).encode()
    headers = {
        **signed(FIRST, stack.secret(FIRST), body, now=now + 100),
        "Content-Type": "application/json",
    }
    res = stack.app.test_client().post("/api/v1/heartbeat", data=body, headers=headers)
    assert res.status_code == 200, res.get_json()
    assert abs(float(r.hget(keys.scanner_health(sid), "through")) - (now - 3)) < 1.5


@pytest.mark.parametrize(
    "through", ["soon", True, None, -1, 1e300, "NaN", [1.0], {"at": 1}], ids=repr
)
def test_a_through_that_is_not_a_time_is_refused_and_nothing_is_recorded(stack, through):
    r, keys = get_redis(stack.app), get_keys(stack.app)
    sid = get_topology(stack.app).scanner(FIRST).id
    assert post_heartbeat(stack, FIRST, through=time.time() - 1).status_code == 200
    before = r.hgetall(keys.scanner_health(sid))
    res = post_heartbeat(stack, FIRST, through=through)  # None goes as JSON null
    if through is None:  # null is "not said", as an older daemon's report
        assert res.status_code == 200
        assert "through" not in r.hgetall(keys.scanner_health(sid))
        return
    assert res.status_code == 400
    assert res.get_json()["error"] == "through must be a time in seconds, from 0 to 1e+11"
    assert r.hgetall(keys.scanner_health(sid)) == before


def test_real_scanners_through_a_cut_push_once_and_revoke_nothing(stack, tmp_path: Path):
    """The daemons and the jobs as they run: two scanners hear alice in chair 1, the store
    server goes away for longer than her chair's absence time and comes back."""
    app = stack.app
    with sessions(app)() as db:
        db.execute(update(Zone).where(Zone.name == "chair-1").values(exit_absent_s=1.5))
        db.commit()
    get_topology(app).invalidate()
    key, k, base = stack.world.emitters["alice"]
    world = World([SimEmitter(key, k, [Leg(0, 1e9, "salon", 1.5, 1.5)], base)], time.time())
    served = Served(app, free_port()).start()
    daemons = [
        ScannerDaemon(
            server_url=served.url,
            scanner=name,
            secret=stack.secret(name),
            source=SimulatedSource(world, "salon", x, 1.5, sigma_db=1.0, interval_s=(0.1, 0.2)),
            queue_path=str(tmp_path / f"{name}.sqlite"),
            batch_age_s=0.3,
        )
        for name, x in ((FIRST, 1.5), (SECOND, 6.0))
    ]
    stop = threading.Event()
    jobs_thread = jobs.start(app, stop)
    r, keys = get_redis(app), get_keys(app)
    salon = get_topology(app).scanner(FIRST).venue_id
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))

    def heard_until() -> float:
        return r.zscore(keys.last_seen(), f"{salon}:{alice}") or 0.0

    for d in daemons:
        d.start()
    try:
        assert wait_for(lambda: _occupant(stack) == "chair-1" and _pushes(stack), 30)
        served.stop()
        # Cut for well over her absence time: each scanner queues batches meanwhile.
        for d in daemons:
            assert d.wait_for(lambda d=d: d.queue.batches >= 12, 30)
        back = time.time()
        served.start()
        for d in daemons:
            assert d.wait_for(lambda d=d: d.queue.batches <= 1, 30)
        # Her readings since the cut ended are in; the jobs swept all along (every 0.1 s), and
        # one more round now judges what they brought.
        assert wait_for(lambda: heard_until() > back + 1.0, 30)
        jobs.sweep_once(app)
        assert _pushes(stack) == [("push", "")] and _occupant(stack) == "chair-1"
    finally:
        for d in daemons:
            d.stop()
        stop.set()
        jobs_thread.join(10)
        served.stop()
