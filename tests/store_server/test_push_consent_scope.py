"""What a seated subscriber's devices may get when her consent changes under her: a consent that
runs out while another still covers the venue, and a withdrawal or erasure landing while someone
else's delivery is computing the zone's blended queue (real HTTP ingest, Redis and SQL; races
are injected at the Redis client, as another worker's commands would land)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import select

from store_server import events, jobs, outbox, push, rights
from store_server.crypto import pseudonym
from store_server.db import sessions
from store_server.models import AuditEntry, Consent, Device, Merchant, Subscriber, utcnow
from store_server.redis_store import get_keys, get_redis, script_sha
from store_server.topology import get_topology
from tests.faults.support import batch_body, eid_rows, signed
from tests.helpers import audit_actions, ingest_rows

pytestmark = [pytest.mark.consent, pytest.mark.privacy]
FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"
# The demo's alice streams these; none may reach a device once her playlist scope is over.
ALICE_TRACK = "trk:1001"


def _sit(stack: Any, who: str, start: float, seconds: int) -> None:
    """Her phone heard in chair-1 by both salon scanners, once a second, over real HTTP."""
    client = stack.app.test_client()
    for s in range(seconds):
        for scanner, level in ((FIRST, -52.0), (SECOND, -66.0)):
            body = batch_body(eid_rows(stack.world.emitters[who], start + s, 1, level))
            headers = signed(scanner, stack.secret(scanner), body)
            assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200


def _ids(app: Any) -> tuple[int, int, int, str]:
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber).where(Subscriber.directory_id == "demo:alice"))
        chair = db.scalar(select(Device.id).where(Device.name == "demo-chair-1-speaker"))
        salon = db.scalar(select(Merchant.id).where(Merchant.slug == "salon-meche"))
        return alice.id, chair, salon, alice.public_id


def _until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()) + 0.05)


def _pseudonym(app: Any, public_id: str) -> str:
    topo = get_topology(app)
    return pseudonym(topo.venue(topo.scanner(FIRST).venue_id).merchant_key, public_id)


def _events(app: Any, device: int) -> list[dict[str, Any]]:
    r, keys = get_redis(app), get_keys(app)
    return [orjson.loads(f["e"]) for _id, f in r.xrange(keys.outbox(device))]


def _given_earlier(app: Any) -> None:
    """Every consent given a minute ago, so the tests' sightings of the last seconds count."""
    with sessions(app)() as db:
        for consent in db.scalars(select(Consent)):
            consent.valid_from = utcnow() - timedelta(minutes=1)
        db.commit()
    jobs.refresh_resolver(app)


def _salon_playlist_over_general_preferences(
    app: Any, alice: int, salon: int, until: float
) -> None:
    """Alice's consent for every merchant shares preferences only; one for the salon alone
    shares her playlist until `until`."""
    with sessions(app)() as db:
        general = db.scalar(select(Consent).where(Consent.subscriber_id == alice))
        general.share, general.statistics = "preferences", False
        today = Consent(
            subscriber_id=alice,
            merchant_id=salon,
            share="playlist",
            statistics=True,
            valid_from=utcnow() - timedelta(minutes=1),
            valid_until=datetime.fromtimestamp(until, UTC),
            receipt_id="rcpt-salon-today",
            receipt={},
        )
        db.add(today)
        db.commit()
    _given_earlier(app)


def _seated_under_a_consent_about_to_run_out(stack: Any) -> tuple[int, int, str, float]:
    """Alice seated in chair-1 under the salon's playlist consent, which runs out 2 s later;
    returns her id, the chair's device, her pseudonym there, and when it runs out."""
    alice, chair, salon, public_id = _ids(stack.app)
    now = time.time()
    until = now + 2.0
    _salon_playlist_over_general_preferences(stack.app, alice, salon, until)
    _sit(stack, "alice", now - 5, 5)
    return alice, chair, _pseudonym(stack.app, public_id), until


def test_a_consent_that_runs_out_while_she_sits_is_revoked_and_the_one_left_pushed(stack):
    app = stack.app
    alice, chair, mine, until = _seated_under_a_consent_about_to_run_out(stack)
    pushed = [(e["type"], e.get("scope")) for e in _events(app, chair) if e["type"] != "queue"]
    assert pushed == [("push", "playlist")]
    # The salon consent runs out while she sits on (the clock is what the test waits for); the
    # one for every merchant still covers her.
    _until(until)
    _sit(stack, "alice", until + 0.1, 2)
    # Before, her presence went on under the lapsed consent: no revoke, and every blended queue
    # of the chair kept her playlist for as long as she sat there. The revoke took the playlist
    # push out of the outbox.
    about_her = [e for e in _events(app, chair) if e.get("subscriber") == mine]
    assert [(e["type"], e.get("scope"), e.get("reason")) for e in about_her] == [
        ("revoke", None, "expired"),
        ("push", "preferences", None),
    ]
    assert ALICE_TRACK not in json.dumps(_events(app, chair))
    assert audit_actions(app, alice) == ["push", "revoke", "push"]
    with sessions(app)() as db:
        receipts = db.scalars(
            select(AuditEntry.receipt_id)
            .where(AuditEntry.subscriber_id == alice)
            .order_by(AuditEntry.at, AuditEntry.id)
        ).all()
    # The revoke is recorded under the consent the push it takes back was given under.
    assert receipts[:2] == ["rcpt-salon-today"] * 2 and receipts[2] != "rcpt-salon-today"
    venue = get_topology(app).scanner(FIRST).venue_id
    state = json.loads(get_redis(app).hget(get_keys(app).tracks(venue), str(alice)))
    assert state["c"]["receipt"] != "rcpt-salon-today" and state["c"]["share"] == "preferences"


def test_a_queue_computed_after_her_consent_ran_out_leaves_her_playlist_out(stack):
    app = stack.app
    _alice, chair, _mine, until = _seated_under_a_consent_about_to_run_out(stack)
    # It runs out before she is heard again: her state still holds it when bob sits down and
    # the chair's queue is computed.
    _until(until)
    _sit(stack, "bob", time.time() - 3, 5)
    queues = [e for e in _events(app, chair) if e["type"] == "queue"]
    assert queues and ALICE_TRACK not in json.dumps(queues[-1])
    assert len(queues[-1]["members"]) == 1  # bob's pseudonym alone


class ConsentEndsAfterTheRead(redis.Redis):
    """A plain client on the app's pool: right after a delivery has read who sits in the zones
    it recomputes, the test's action (another worker's withdrawal or erasure) lands."""

    def __init__(self, action: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action, self.fired = action, False

    def evalsha(self, sha, *args):  # type: ignore[no-untyped-def]
        out = super().evalsha(sha, *args)
        self._after(sha)
        return out

    def eval(self, script, *args):  # type: ignore[no-untyped-def]
        # A script's first run on a fresh server (EVALSHA refused, so EVAL).
        out = super().eval(script, *args)
        self._after(script_sha(script))
        return out

    def _after(self, sha: str) -> None:
        if sha == script_sha(push._PRESENT_LUA) and not self.fired:
            self.fired = True
            self.action()


@pytest.mark.parametrize("action", ["withdraw", "erase"])
def test_a_queue_read_before_her_consent_ended_is_not_sent_after_her_revoke(
    stack, monkeypatch, action
):
    app = stack.app
    alice, chair, _salon, public_id = _ids(app)
    _given_earlier(app)
    now = time.time()
    _sit(stack, "alice", now - 9, 5)
    mine = _pseudonym(app, public_id)
    racing = ConsentEndsAfterTheRead(
        lambda: getattr(rights, action)(app, alice), connection_pool=get_redis(app).connection_pool
    )
    monkeypatch.setitem(app.extensions, "cm_redis", racing)
    # Bob sits down: his delivery reads the chair (alice there), then she withdraws or is erased
    # (revoke, the chair's queue without her), then his delivery sends the queue it computed.
    _sit(stack, "bob", now - 3, 4)
    assert racing.fired
    queues = [e for e in _events(app, chair) if e["type"] == "queue"]
    # Before, bob's queue with her pseudonym and tracks came after the revoke: the device's
    # newest queue, and replayed to it on reconnect.
    assert queues and mine not in queues[-1]["members"]
    replayed = outbox.pending(get_redis(app), get_keys(app), chair, time.time())
    # Her revoke is replayed, and nothing else about her.
    told = [e for e in replayed if e["type"] != "revoke"]
    assert mine not in json.dumps(told) and ALICE_TRACK not in json.dumps(told)


def test_her_own_queue_read_before_her_erasure_is_not_left_in_the_outbox(stack, monkeypatch):
    app = stack.app
    alice, chair, _salon, public_id = _ids(app)
    _given_earlier(app)
    racing = ConsentEndsAfterTheRead(
        lambda: rights.erase(app, alice), connection_pool=get_redis(app).connection_pool
    )
    monkeypatch.setitem(app.extensions, "cm_redis", racing)
    # Her erasure lands during her own enter's delivery, once it has pushed and read the chair:
    # before, the queue it then appended (her profile read before the erasure) outlived the
    # erasure's sweep of the outboxes, her pseudonym and playlist kept for PUSH_TTL_S.
    _sit(stack, "alice", time.time() - 4, 5)
    assert racing.fired
    left = json.dumps(_events(app, chair))
    assert _pseudonym(app, public_id) not in left and ALICE_TRACK not in left


def _consents_run_out(app, subscriber: int, until: float) -> float:  # type: ignore[no-untyped-def]
    """Every consent of the subscriber ends at `until` (epoch s); the resolver table rebuilt."""
    with sessions(app)() as db:
        for consent in db.scalars(select(Consent).where(Consent.subscriber_id == subscriber)):
            consent.valid_from = utcnow() - timedelta(minutes=1)
            consent.valid_until = datetime.fromtimestamp(until, UTC)
        db.commit()
    jobs.refresh_resolver(app)
    return until


def test_a_batch_arriving_after_her_consent_ran_out_pushes_nothing_and_revokes_nothing(stack):
    app = stack.app
    alice, chair, _salon, _public_id = _ids(app)
    until = _consents_run_out(app, alice, time.time() + 2.0)
    # Her only consent runs out; the resolver table still holds it until its next rebuild.
    _until(until)
    # What the scanners heard in her last seconds under it arrives now (a batch a few seconds
    # late): before, its enter was pushed, her playlist disclosed after her consent had ended,
    # and revoked when the sweeper ended the presence.
    _sit(stack, "alice", until - 6.0, 5)
    venue = get_topology(app).scanner(FIRST).venue_id
    assert [e["type"] for e in _events(app, chair) if e["type"] != "queue"] == []
    jobs.sweep_once(app, now=time.time() + 120)  # her presence ends, unheard since
    assert [e["type"] for e in _events(app, chair) if e["type"] != "queue"] == []
    assert ALICE_TRACK not in json.dumps(_events(app, chair))
    assert audit_actions(app, alice) == []
    assert get_redis(app).hget(get_keys(app).tracks(venue), str(alice)) is None


def test_an_enter_delivered_again_after_her_consent_ran_out_is_not_pushed(stack):
    app = stack.app
    alice, chair, _salon, _public_id = _ids(app)
    until = _consents_run_out(app, alice, time.time() + 3.0)
    # Her enter is committed while her consent holds, and its delivery fails (ingest alone
    # here: the process died before delivering); the retry comes after the consent ran out.
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    start = time.time() - 4.0
    for s in range(5):
        for name, level in ((FIRST, -52.0), (SECOND, -66.0)):
            rows = eid_rows(stack.world.emitters["alice"], start + s, 1, level)
            ingest_rows(r, keys, topo, topo.scanner(name), rows)
    assert r.xlen(keys.pending_events()) == 1
    _until(until)
    events.flush(app, min_age_s=0)
    assert [e["type"] for e in _events(app, chair) if e["type"] != "queue"] == []
    assert audit_actions(app, alice) == []
