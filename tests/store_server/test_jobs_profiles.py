"""Background jobs: the hourly streaming-profile refresh and retention round run once an hour
across all jobs processes (the retention round with nobody running its command), and however
slow the streaming service, the refresh holds up neither the exit sweeper nor the dark zones
(real Redis, SQL, jobs threads and signed HTTP requests; the streaming service is the outside
system, answering when the test says)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from store_server import jobs, retention, scanner_health
from store_server.db import sessions
from store_server.models import Consent, Subscriber, Venue, Visit, utcnow
from store_server.redis_store import get_keys, get_redis
from store_server.streaming import Profile
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed, wait_for

FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"


class HeldStreaming:
    """A streaming service that answers only once the test releases it (one call per
    subscriber can take minutes in production)."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()

    def profile(self, directory_id: str) -> Profile | None:
        """No profile, once released."""
        self.asked.set()
        self.release.wait(60)
        return None


def _heartbeat(stack: Stack, scanner: str, adapter: str) -> None:
    body = json.dumps({"adapter": adapter, "uptime_s": 100}).encode()
    headers = {**signed(scanner, stack.secret(scanner), body), "Content-Type": "application/json"}
    res = stack.app.test_client().post("/api/v1/heartbeat", data=body, headers=headers)
    assert res.status_code == 200, res.get_json()


def _visit(stack: Stack, who: str, start: float) -> None:
    """Ten seconds of a visitor in chair 2 from `start` (in the past: the consent is backdated
    to cover it), a batch per scanner and second, through the API."""
    with sessions(stack.app)() as db:
        sub = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == f"demo:{who}"))
        for consent in db.scalars(select(Consent).where(Consent.subscriber_id == sub)):
            consent.valid_from -= timedelta(minutes=5)
        db.commit()
    jobs.refresh_resolver(stack.app)
    client = stack.app.test_client()
    emitter = stack.world.emitters[who]
    for second in range(10):
        for scanner, level in ((SECOND, -52.0), (FIRST, -66.0)):
            body = batch_body(eid_rows(emitter, start + second, 1, level))
            headers = signed(scanner, stack.secret(scanner), body)
            res = client.post("/api/v1/sightings", data=body, headers=headers)
            assert res.status_code == 200


def test_a_slow_profile_refresh_neither_keeps_leavers_present_nor_lets_dark_zones_lapse(stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    salon = get_topology(app).scanner(FIRST).venue_id
    streaming = HeldStreaming()
    app.extensions["cm_streaming"] = streaming
    _heartbeat(stack, FIRST, "up")
    _heartbeat(stack, SECOND, "up")
    # Bob sat in chair 2 and left half a minute ago: the first sweep exits him.
    _visit(stack, "bob", time.time() - 40.0)
    (bob,) = r.hkeys(keys.occupants(salon))
    assert r.hget(keys.occupants(salon), bob) == "chair-2"
    _heartbeat(stack, FIRST, "down")  # chair 1 goes dark
    stop = threading.Event()
    running = set(threading.enumerate())  # the session's live server runs jobs of its own
    thread = jobs.start(app, stop)
    ours = [t for t in threading.enumerate() if t not in running and t.name.startswith("cm-jobs")]
    try:
        # The refresh is under way, and stays so until released below.
        assert streaming.asked.wait(10)
        assert wait_for(lambda: r.hget(keys.occupants(salon), bob) is None, 10), "bob kept"
        dark = {salon: frozenset({"chair-1"})}
        assert wait_for(lambda: scanner_health.read(r, keys) == dark, 10), "not published"
        # As if DARK_TTL_S had run out: published again, the refresh still under way.
        r.delete(keys.dark_zones())
        assert wait_for(lambda: scanner_health.read(r, keys) == dark, 10), "dark zones lapsed"
        assert not streaming.release.is_set()
    finally:
        streaming.release.set()
        stop.set()
        thread.join(30)
    # Joining the jobs waits for the refresh thread too.
    assert len(ours) == 2 and not any(t.is_alive() for t in ours)


class CountingStreaming:
    """A streaming service that counts the refreshes asking about one account, and fails on
    demand (the service down)."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.refreshes = 0
        self.down = False

    def profile(self, directory_id: str) -> Profile | None:
        """No profile; counted, or refused while down."""
        if self.down:
            raise ConnectionError("streaming service unreachable")
        self.refreshes += directory_id == self.account
        return None


def test_the_hourly_profile_refresh_runs_once_an_hour_whatever_the_number_of_processes(stack):
    app = stack.app
    r, key = get_redis(app), get_keys(app).lock("profiles")
    streaming = CountingStreaming("demo:bob")
    app.extensions["cm_streaming"] = streaming
    # Two jobs processes (the lock, in Redis, is all they share): the first refreshes, the
    # second, started a moment later, finds it done.
    assert jobs.refresh_profiles_due(app) is True
    assert jobs.refresh_profiles_due(app) is False
    assert streaming.refreshes == 1
    # A minute later (the lock's clock moved on, as Redis's would): still within the hour, so
    # neither process refreshes again. The old 60 s lock let every process run its own.
    r.pexpire(key, r.pttl(key) - 61_000)
    assert jobs.refresh_profiles_due(app) is False and streaming.refreshes == 1
    # The hour over: the next one refreshes.
    r.delete(key)
    assert jobs.refresh_profiles_due(app) is True and streaming.refreshes == 2


def test_a_failed_profile_refresh_is_tried_again_within_minutes(stack):
    app = stack.app
    r, key = get_redis(app), get_keys(app).lock("profiles")
    streaming = CountingStreaming("demo:bob")
    app.extensions["cm_streaming"] = streaming
    streaming.down = True
    with pytest.raises(ConnectionError):
        jobs.refresh_profiles_due(app)
    # Not an hour without fresh profiles: any process tries again a minute on.
    assert 0 < r.pttl(key) <= jobs.SLOW_RETRY_S * 1000
    assert jobs.refresh_profiles_due(app) is False
    streaming.down = False
    r.delete(key)
    assert jobs.refresh_profiles_due(app) is True and streaming.refreshes == 1


def test_a_failing_job_releases_its_lock_and_a_succeeding_one_holds_it_for_its_period(stack):
    # Held after a failure, a job that failed while the database was down would wait out its
    # whole period once it is back (the resolver table a minute late), in every process.
    app = stack.app
    r, keys = get_redis(app), get_keys(app)

    def down() -> None:
        raise ConnectionError("database unreachable")

    assert jobs._run(app, "resolver", 54.0, down) is False
    assert not r.exists(keys.lock("resolver"))
    ran: list[bool] = []
    assert jobs._run(app, "resolver", 54.0, lambda: ran.append(True)) is True and ran == [True]
    assert 50_000 < r.pttl(keys.lock("resolver")) <= 54_000
    assert jobs._run(app, "resolver", 54.0, lambda: ran.append(True)) is False and ran == [True]


def _old_visit(app) -> int:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
        venue = db.scalars(select(Venue).order_by(Venue.id)).first()
        old = utcnow() - timedelta(days=app.config["RETENTION_DAYS"] + 1)
        visit = Visit(
            subscriber_id=alice,
            merchant_id=venue.merchant_id,
            venue_id=venue.id,
            zone="chair-1",
            started_at=old,
            ended_at=old + timedelta(minutes=30),
            dwell_s=1800.0,
        )
        db.add(visit)
        db.commit()
        return visit.id


def _stored(app, visit_id: int) -> bool:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return db.get(Visit, visit_id) is not None


@pytest.mark.consent
def test_the_jobs_purge_visits_past_retention_without_anyone_running_the_command(stack):
    # worker.py runs exactly jobs.start: before, it ended expired presences but never purged,
    # so in the deployed system visits and the disclosure log outlived RETENTION_DAYS for good.
    app = stack.app
    visit = _old_visit(app)
    stop = threading.Event()
    thread = jobs.start(app, stop)
    try:
        assert wait_for(lambda: not _stored(app, visit), 30)
    finally:
        stop.set()
        thread.join(30)
    # Held for the period: a second jobs process does not purge again within the hour.
    assert (
        get_redis(app).pttl(get_keys(app).lock("retention")) > (jobs.RETENTION_EVERY_S - 60) * 1000
    )
    assert jobs.retention_due(app) is False


@pytest.mark.consent
def test_a_failed_retention_round_is_tried_again_within_minutes(stack, monkeypatch):
    app = stack.app
    r, key = get_redis(app), get_keys(app).lock("retention")
    visit = _old_visit(app)
    # SQL refusing the purge, as a database down would.
    real_purge = retention.purge

    def refused(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("DELETE", {}, Exception("database unreachable"))

    monkeypatch.setattr(retention, "purge", refused)
    with pytest.raises(OperationalError):
        jobs.retention_due(app)
    assert 0 < r.pttl(key) <= jobs.SLOW_RETRY_S * 1000 and _stored(app, visit)
    monkeypatch.setattr(retention, "purge", real_purge)
    r.delete(key)
    assert jobs.retention_due(app) is True and not _stored(app, visit)
