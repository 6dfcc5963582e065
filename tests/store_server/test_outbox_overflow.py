"""An offline device's outbox filling up while its zone stays busy: what it must still get on
reconnect (real Redis and SQL, signed HTTP batches, the replay a reconnecting device gets)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from store_server import outbox
from store_server.db import sessions
from store_server.models import Device, Subscriber
from store_server.occupancy import end_presence
from store_server.redis_store import get_keys, get_redis
from tests.faults.support import Stack, batch_body, eid_rows, make_stack, signed

pytestmark = pytest.mark.privacy
SCANNER = "demo-salon-scanner-1"
MAXLEN = 10


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The demo world, its outboxes bounded at MAXLEN events."""
    s = make_stack(tmp_path, OUTBOX_MAXLEN=MAXLEN)
    yield s
    s.close()


def _enters(stack: Stack, name: str) -> None:
    body = batch_body(eid_rows(stack.world.emitters[name], time.time(), 4, rssi=-50))
    resp = stack.app.test_client().post(
        "/api/v1/sightings", data=body, headers=signed(SCANNER, stack.secret(SCANNER), body)
    )
    assert resp.status_code == 200, resp.text


def test_a_revoke_waiting_for_an_offline_device_outlives_a_busy_zone(stack):
    """Alice's push reached the chair's speaker, which then went offline; she withdrew. While
    it was away bob came and went many times: on reconnect it must still hear her revoke, or it
    plays her playlist on."""
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    with sessions(app)() as db:
        speaker = db.scalar(select(Device.id).where(Device.name == "demo-chair-1-speaker"))
        subs = dict(db.execute(select(Subscriber.directory_id, Subscriber.id)).all())
    alice, bob = subs["demo:alice"], subs["demo:bob"]
    _enters(stack, "alice")
    # The speaker was online: it got her push (and the queue) and acked them.
    for entry_id, _ in r.xrange(keys.outbox(speaker)):
        assert outbox.ack(r, keys, speaker, entry_id)
    assert end_presence(app, alice, "withdrawn") == 1
    for _ in range(40):  # a push, a revoke and two queues each time
        _enters(stack, "bob")
        assert end_presence(app, bob, "absent") == 1
    assert r.xlen(keys.outbox(speaker)) <= MAXLEN  # still bounded
    replay = outbox.pending(r, keys, speaker, time.time())
    revoked = [(e["subscriber"], e.get("reason")) for e in replay if e["type"] == "revoke"]
    assert [reason for _, reason in revoked] == ["withdrawn", "absent"]  # alice's, then bob's
    assert [e["type"] for e in replay] == ["revoke", "revoke", "queue"]
    assert replay[-1]["members"] == []  # the newest queue: nobody is left
