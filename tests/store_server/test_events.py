"""Pending presence events: each delivered once, whoever tries (the inline delivery, the retry
job, a scanner's retry flushing what is pending); one that died is taken over (real Redis and
SQL, signed HTTP batches)."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from store_server import events, rights
from store_server.db import sessions
from store_server.models import Subscriber
from store_server.presence import PresenceEvent
from store_server.push import Occurrence
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed, wait_for
from tests.helpers import audit_actions

CAR = "demo-car-scanner"


def _pending_exit(stack: Stack) -> tuple[int, Occurrence, str]:
    """Alice rode (her enter pushed), and her exit is committed but not yet delivered."""
    app = stack.app
    client = app.test_client()
    start = time.time()
    for s in range(5):
        body = batch_body(eid_rows(stack.world.emitters["alice"], start + s, 1, -50.0))
        headers = signed(CAR, stack.secret(CAR), body)
        assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    venue = topo.venue(topo.scanner(CAR).venue_id)
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
    state = r.hget(keys.tracks(venue.id), str(alice))
    consent = json.loads(state)["c"]
    exit_ = Occurrence(
        alice, venue, consent, PresenceEvent("exit", "cabin", start + 9, start + 2, "absent"), True
    )
    pipe = r.pipeline(transaction=True)
    events.queue(pipe, keys, [exit_])
    (entry_id,) = events.committed_ids(pipe.execute(), 1)
    return alice, exit_, entry_id


def _revokes(stack: Stack, subscriber: int) -> int:
    return audit_actions(stack.app, subscriber).count("revoke")


def test_a_flush_never_repeats_an_event_being_delivered_inline(stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    alice, exit_, entry_id = _pending_exit(stack)
    # A scanner's retry flushes everything pending, whatever its age, while the inline delivery
    # of this exit holds it: the flush leaves it be.
    assert events.claim(r, keys, [entry_id]) == [True]
    assert events.flush(app, min_age_s=0) == 0 and _revokes(stack, alice) == 0
    # The other way round: the flush delivers first, the inline delivery comes late.
    r.delete(keys.delivering(entry_id))
    assert events.flush(app, min_age_s=0) == 1 and _revokes(stack, alice) == 1
    events.deliver_now(app, [exit_], [entry_id])
    assert _revokes(stack, alice) == 1 and r.xlen(keys.pending_events()) == 0


def test_an_event_whose_delivery_died_is_delivered_by_the_retry(stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    alice, _, entry_id = _pending_exit(stack)
    assert events.claim(r, keys, [entry_id]) == [True]
    r.pexpire(keys.delivering(entry_id), 1)  # the process that took it died: its lease ends
    assert wait_for(lambda: not r.exists(keys.delivering(entry_id)), 5)
    assert events.flush(app, min_age_s=0) == 1 and _revokes(stack, alice) == 1


def _pushes(stack: Stack, subscriber: int) -> int:
    return audit_actions(stack.app, subscriber).count("push")


@pytest.mark.privacy
def test_an_enter_redelivered_after_its_presence_ended_pushes_nothing(stack):
    # Its first delivery failed (SQL down); meanwhile she withdrew, and the revoke went out.
    # Redelivered then, the enter would put her playlist back on the speaker.
    app = stack.app
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    alice, _, _ = _pending_exit(stack)
    venue = topo.venue(topo.scanner(CAR).venue_id)
    state = json.loads(r.hget(keys.tracks(venue.id), str(alice)))
    since = state["p"]["since"]
    enter = Occurrence(
        alice, venue, state["c"], PresenceEvent("enter", "cabin", since, since), True
    )
    pipe = r.pipeline(transaction=True)
    events.queue(pipe, keys, [enter])
    pipe.execute()
    pushed = _pushes(stack, alice)
    # Still present: a late enter is delivered.
    assert events.flush(app, min_age_s=0) == 2 and _pushes(stack, alice) == pushed + 1
    pipe = r.pipeline(transaction=True)
    events.queue(pipe, keys, [enter])
    pipe.execute()
    assert rights.withdraw(app, alice) == 1
    assert events.flush(app, min_age_s=0) == 1 and _pushes(stack, alice) == pushed + 1
