"""The journal of audit entries and visits on their way to SQL: a row written again is kept once,
and erasure reaches the entries not yet written (real Redis and SQL, signed HTTP batches)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import delete, event, func, select, text

from store_server import journal, rights
from store_server.db import sessions
from store_server.models import AuditEntry, Device, Subscriber, Visit
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed, wait_for
from tests.helpers import audit_actions

FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"


def _seated(stack: Stack, who: str) -> int:
    """`who` seated in chair 1 for six seconds (entered, her push audited); her id."""
    client = stack.app.test_client()
    start = time.time()
    for s in range(6):
        for scanner, level in ((FIRST, -52.0), (SECOND, -66.0)):
            body = batch_body(eid_rows(stack.world.emitters[who], start + s, 1, level))
            headers = signed(scanner, stack.secret(scanner), body)
            assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    with sessions(stack.app)() as db:
        return db.scalar(select(Subscriber.id).where(Subscriber.directory_id == f"demo:{who}"))


def _audit_entry(stack: Stack, subscriber: int) -> tuple[dict, str]:
    """The subscriber's push audit entry as the journal holds it, and its event id."""
    with sessions(stack.app)() as db:
        row = db.scalars(
            select(AuditEntry).where(
                AuditEntry.subscriber_id == subscriber, AuditEntry.action == "push"
            )
        ).one()
        columns = ("subscriber_id", "action", "pseudonym", "merchant_id", "device_id", "scope")
        entry = {c: getattr(row, c) for c in (*columns, "receipt_id", "reason")}
        return {**entry, "at": row.at.timestamp()}, row.event_id


def _journal(stack: Stack, subscriber: int, kind: str, row: dict, event_id: str = "") -> None:
    """An entry left in the journal as delivery appends it (its SQL write failed)."""
    r, keys = get_redis(stack.app), get_keys(stack.app)
    fields = {"s": subscriber, kind: journal.encode(row)}
    r.xadd(keys.journal(), {**fields, **({"e": event_id} if event_id else {})})


def _count(stack: Stack, model, subscriber: int) -> int:  # type: ignore[no-untyped-def]
    with sessions(stack.app)() as db:
        return db.scalar(select(func.count()).where(model.subscriber_id == subscriber))


def test_a_journal_entry_written_again_is_kept_once(stack):
    # Written inline, then not dropped (Redis failed just then): the jobs write it again.
    alice = _seated(stack, "alice")
    entry, event_id = _audit_entry(stack, alice)
    _journal(stack, alice, "a", entry, event_id)
    assert journal.drain(stack.app, min_age_s=0) == 1
    assert audit_actions(stack.app, alice) == ["push"]
    assert get_redis(stack.app).xlen(get_keys(stack.app).journal()) == 0


@pytest.mark.privacy
def test_erasure_reaches_the_journal_and_nothing_of_the_erased_is_written_after(stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    alice, bob = _seated(stack, "alice"), _seated(stack, "bob")
    entry, event_id = _audit_entry(stack, alice)
    venue = get_topology(app).venue(get_topology(app).scanner(FIRST).venue_id)
    now = time.time()
    visit = journal.visit_row(bob, venue.merchant_id, venue.id, "chair-1", now - 60, now, "absent")
    with sessions(app)() as db:
        db.execute(delete(AuditEntry).where(AuditEntry.event_id == event_id))
        db.commit()
    _journal(stack, alice, "a", entry, event_id)
    _journal(stack, bob, "v", visit)
    # A round of the jobs that read the journal just before the erasure, and writes after it.
    stale = [journal.parse(i, f) for i, f in r.xrange(keys.journal())]
    assert rights.erase(app, alice)
    assert [f["s"] for _, f in r.xrange(keys.journal())] == [str(bob)]
    # Delivery's own write does not look: the foreign key refuses the lot, and it waits.
    assert not journal.write(app, stale, check_referents=False)
    assert _count(stack, Visit, bob) == 0
    assert journal.write(app, stale)
    assert _count(stack, AuditEntry, alice) == 0
    assert _count(stack, Visit, bob) == 1
    assert r.xlen(keys.journal()) == 0


def test_an_entry_whose_device_was_deleted_is_written_without_it_not_kept_for_ever(stack):
    # Written before the device was removed, the row would hold NULL (ON DELETE SET NULL); left
    # pointing at it, the foreign key would refuse every entry drained with it, for good.
    app = stack.app
    alice = _seated(stack, "alice")
    entry, event_id = _audit_entry(stack, alice)
    with sessions(app)() as db:
        db.execute(delete(AuditEntry).where(AuditEntry.event_id == event_id))
        db.execute(delete(Device).where(Device.id == entry["device_id"]))
        db.commit()
    _journal(stack, alice, "a", entry, event_id)
    _journal(stack, alice, "a", {**entry, "device_id": None}, "")
    assert journal.drain(app, min_age_s=0, limit=1) == 2  # a page at a time, all of it
    with sessions(app)() as db:
        rows = db.execute(
            select(AuditEntry.device_id, AuditEntry.event_id).where(
                AuditEntry.subscriber_id == alice
            )
        ).all()
    assert sorted(rows, key=str) == sorted([(None, event_id), (None, None)], key=str)
    assert get_redis(app).xlen(get_keys(app).journal()) == 0


@pytest.mark.privacy
@pytest.mark.parametrize("check_referents", [True, False], ids=["jobs", "inline"])
def test_an_erasure_racing_a_journal_write_leaves_nothing_of_her(stack, check_referents):
    # The write has inserted her rows (holding her row's foreign-key lock) and not committed
    # when the erasure deletes her audit log: unlocked, its DELETE missed the uncommitted rows,
    # the subscriber's DELETE then waited for the commit, and ON DELETE SET NULL kept them.
    app = stack.app
    if app.extensions["cm_engine"].dialect.name != "postgresql":
        pytest.skip("row locks: SQLite serialises the two writers whole")
    r, keys = get_redis(app), get_keys(app)
    alice = _seated(stack, "alice")
    entry, _ = _audit_entry(stack, alice)
    venue = get_topology(app).venue(get_topology(app).scanner(FIRST).venue_id)
    now = time.time()
    revoke = {**entry, "action": "revoke", "scope": None, "reason": "absent", "at": now}
    _journal(stack, alice, "a", revoke, "9999999999999-0")
    _journal(stack, alice, "v", journal.visit_row(alice, venue.merchant_id, venue.id, "chair-1",
                                                  now - 60, now, "absent"))  # fmt: skip
    entries = [journal.parse(i, f) for i, f in r.xrange(keys.journal())]
    engine, writer, eraser = app.extensions["cm_engine"], threading.get_ident(), []

    def waiting_on_a_lock() -> bool:
        with engine.connect() as c:
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            return c.execute(text(query)).scalar_one() > 0

    def erase_before_the_commit(_conn) -> None:  # type: ignore[no-untyped-def]
        if threading.get_ident() != writer or eraser:
            return
        eraser.append(threading.Thread(target=rights.erase, args=(app, alice)))
        eraser[0].start()
        assert wait_for(waiting_on_a_lock, 30), "the erasure never reached the write's lock"

    event.listen(engine, "commit", erase_before_the_commit)
    try:
        journal.write(app, entries, check_referents=check_referents)
    finally:
        event.remove(engine, "commit", erase_before_the_commit)
    eraser[0].join(30)
    with sessions(app)() as db:
        left = db.scalars(
            select(AuditEntry.action).where(AuditEntry.pseudonym == entry["pseudonym"])
        )
        assert list(left) == [] and _count(stack, Visit, alice) == 0


def test_an_entry_written_before_its_device_was_deleted_is_not_written_again(stack):
    # Written inline, its entry not dropped (Redis failed just then), then the device removed:
    # the row's device is NULL now, which the unique index does not compare.
    app = stack.app
    alice = _seated(stack, "alice")
    entry, event_id = _audit_entry(stack, alice)
    _journal(stack, alice, "a", entry, event_id)
    with sessions(app)() as db:
        db.execute(delete(Device).where(Device.id == entry["device_id"]))
        db.commit()
    assert journal.drain(app, min_age_s=0) == 1
    with sessions(app)() as db:
        rows = db.execute(
            select(AuditEntry.device_id, AuditEntry.event_id).where(
                AuditEntry.subscriber_id == alice
            )
        ).all()
    assert rows == [(None, event_id)]


@pytest.mark.privacy
def test_erasure_drops_her_entries_from_a_journal_longer_than_a_page(stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    for n in range(7):
        who = 1 if n % 3 else 2  # 1, 2: subscriber ids as the journal holds them
        _journal(stack, who, "v", {"subscriber_id": who, "n": n})
    assert journal.drop_for(r, keys, 1, page=2) == 4
    assert [f["s"] for _, f in r.xrange(keys.journal())] == ["2", "2", "2"]
    r.delete(keys.journal())
