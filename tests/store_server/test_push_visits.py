"""Visits recorded on exit: only under a statistics consent still in force (real Redis and SQL,
signed HTTP batches, the jobs' sweeper)."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from store_server import jobs, rights
from store_server.db import sessions
from store_server.models import Subscriber, Visit
from store_server.presence import PresenceEvent
from store_server.push import Occurrence, deliver
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed

FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"


def _seated(stack: Stack) -> tuple[int, float]:
    """Alice (statistics consent) seated in chair 1 for eight seconds; her id and the last."""
    client = stack.app.test_client()
    start = time.time()
    for s in range(8):
        for scanner, level in ((FIRST, -52.0), (SECOND, -66.0)):
            body = batch_body(eid_rows(stack.world.emitters["alice"], start + s, 1, level))
            headers = signed(scanner, stack.secret(scanner), body)
            assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    with sessions(stack.app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
    return alice, start + 7


def _visits(stack: Stack, subscriber: int) -> int:
    with sessions(stack.app)() as db:
        return db.scalar(select(func.count()).where(Visit.subscriber_id == subscriber))


def test_leaving_records_the_visit(stack):
    alice, last = _seated(stack)
    assert jobs.sweep_once(stack.app, now=last + 30) == 1
    assert _visits(stack, alice) == 1


def test_a_withdrawal_records_no_visit_of_the_presence_it_ends(stack):
    # The state carried the statistics scope of the enter; a withdrawal means stop.
    alice, _ = _seated(stack)
    assert rights.withdraw(stack.app, alice) == 1
    assert _visits(stack, alice) == 0


def test_an_exit_delivered_twice_records_one_visit(stack):
    # A delivery stalled past its claim (a lock held for a minute) is taken over by the retry
    # job: both deliver the same exit, and the visit must count once.
    alice, last = _seated(stack)
    r, keys, topo = get_redis(stack.app), get_keys(stack.app), get_topology(stack.app)
    venue = topo.venue(topo.scanner(FIRST).venue_id)
    state = json.loads(r.hget(keys.tracks(venue.id), str(alice)))
    p = state["p"]
    left = PresenceEvent("exit", p["zone"], last + 5, p["since"], "absent")
    exit_ = Occurrence(alice, venue, state["c"], left, True)
    deliver(stack.app, [exit_])
    deliver(stack.app, [exit_])
    assert _visits(stack, alice) == 1
