"""Audit entries and visits on their way to SQL.

A device event is appended to its outbox and its audit entry to this journal (a Redis stream)
in one atomic step (push.py), so no disclosure reaches a device unrecorded, whatever fails
afterwards. Delivery then writes the journal's new entries to SQL at once, in one transaction,
and drops them; if that fails (the database down, the process killed), the entries stay and the
jobs write them later, without the push being delivered again. Each row carries its identity (an
audit entry its device and event id, a visit its presence), so a row written twice — inline and
by the jobs, or again after its entries could not be dropped — is kept once. Erasure drops a
subscriber's entries, rows of a subscriber erased meanwhile are never written, and rows that
refer to a device, venue or merchant deleted meanwhile are written as the deletion would have
left them, so that no entry can block the journal for good.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from flask import Flask
from sqlalchemy import insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from store_server.db import sessions
from store_server.keys import Keys
from store_server.models import AuditEntry, Consent, Device, Merchant, Subscriber, Venue, Visit
from store_server.redis_store import get_keys, get_redis

log = logging.getLogger(__name__)
# Exit reasons of a presence ended because its consent ended (occupancy.end_presence callers).
CONSENT_ENDED = frozenset({"withdrawn", "erased", "key_revoked", "expired"})
# An entry this young is still its inline writer's: the jobs leave it be, as they do a pending
# presence event (events.RETRY_AFTER_S).
DRAIN_AFTER_S = 10.0
DRAIN_BUDGET_S = 1.0
_TIMES = {"a": ("at",), "v": ("started_at", "ended_at")}

Entry = tuple[str, str, dict[str, Any]]  # (stream id, kind "a" audit | "v" visit, row)


def encode(row: dict[str, Any]) -> str:
    """A row as journal JSON (times as epoch seconds)."""
    return orjson.dumps(row).decode()


def visit_row(
    subscriber_id: int,
    merchant_id: int,
    venue_id: int,
    zone: str,
    since: float,
    at: float,
    reason: str | None,
) -> dict[str, Any]:
    """A visit as the journal holds it: the presence, and why it ended (a consent ending decides
    at write time whether it may be recorded)."""
    return {
        "subscriber_id": subscriber_id,
        "merchant_id": merchant_id,
        "venue_id": venue_id,
        "zone": zone,
        "started_at": since,
        "ended_at": at,
        "dwell_s": max(0.0, at - since),
        "reason": reason,
    }


def parse(entry_id: str, fields: dict[str, str]) -> Entry:
    """A journal stream entry as (id, kind, row)."""
    if "a" in fields:
        return entry_id, "a", {**orjson.loads(fields["a"]), "event_id": fields.get("e") or None}
    return entry_id, "v", orjson.loads(fields["v"])


def _insert_once(db: Session, table: Any) -> Any:
    """INSERT that skips a row already there (a visit's presence, an audit entry's device event):
    a row written again (inline and by the jobs, or a delivery taken over after its claim
    lapsed) must count once."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


def _still_consented(db: Session, visits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the visits, those that may be recorded: one cut short because a consent ended only
    where a statistics consent for that merchant is still in force. The state carried the scope
    its enter was disclosed under, and a withdrawal means stop, also for the visit it cut
    short."""
    subs = sorted({v["subscriber_id"] for v in visits if v["reason"] in CONSENT_ENDED})
    if not subs:
        return visits
    now = datetime.now(UTC)
    covered = {
        (s, m)
        for s, m in db.execute(
            select(Consent.subscriber_id, Consent.merchant_id).where(
                Consent.subscriber_id.in_(subs),
                Consent.statistics.is_(True),
                Consent.withdrawn_at.is_(None),
                or_(Consent.valid_until.is_(None), Consent.valid_until > now),
            )
        )
    }
    return [
        v
        for v in visits
        if v["reason"] not in CONSENT_ENDED
        or (v["subscriber_id"], None) in covered
        or (v["subscriber_id"], v["merchant_id"]) in covered
    ]


def _sql_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not (kind == "v" and k == "reason")}
    for name in _TIMES[kind]:
        out[name] = datetime.fromtimestamp(out[name], UTC)
    return out


def _existing(db: Session, model: Any, ids: set[Any]) -> set[Any]:
    """Which of these ids still have a row of `model`."""
    ids.discard(None)
    if not ids:
        return set()
    return set(db.scalars(select(model.id).where(model.id.in_(sorted(ids)))))


def _as_deleted(
    db: Session, audit: list[dict[str, Any]], visits: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows as the database would hold them had they been written before what they refer
    to was deleted: none of an erased subscriber (erasure reaches the journal too) or of a
    venue or merchant gone (their visits go with them), an audit entry's device or merchant
    gone set to none (their foreign keys' ON DELETE SET NULL). A row left pointing at a deleted
    row would make the foreign key refuse every entry written with it, for good."""
    subs = _existing(db, Subscriber, {row["subscriber_id"] for row in (*audit, *visits)})
    merchants = _existing(db, Merchant, {row["merchant_id"] for row in (*audit, *visits)})
    devices = _existing(db, Device, {row["device_id"] for row in audit})
    venues = _existing(db, Venue, {row["venue_id"] for row in visits})
    audit = [
        {
            **row,
            "device_id": row["device_id"] if row["device_id"] in devices else None,
            "merchant_id": row["merchant_id"] if row["merchant_id"] in merchants else None,
        }
        for row in audit
        if row["subscriber_id"] in subs
    ]
    orphans = {row["event_id"] for row in audit if row["device_id"] is None} - {None}
    if orphans:
        # Its device gone, a row no longer has the identity the unique index keeps once (NULLs
        # differ): one written before (inline, its entry not dropped) is found by event.
        there = {
            (event_id, subscriber, action)
            for event_id, subscriber, action in db.execute(
                select(AuditEntry.event_id, AuditEntry.subscriber_id, AuditEntry.action).where(
                    AuditEntry.event_id.in_(sorted(orphans)), AuditEntry.device_id.is_(None)
                )
            )
        }
        audit = [
            row
            for row in audit
            if row["device_id"] is not None
            or (row["event_id"], row["subscriber_id"], row["action"]) not in there
        ]
    visits = [
        v
        for v in visits
        if v["subscriber_id"] in subs and v["merchant_id"] in merchants and v["venue_id"] in venues
    ]
    return audit, visits


def write(app: Flask, entries: list[Entry], check_referents: bool = True) -> bool:
    """Write journal entries to SQL in one transaction, then drop them from the journal; False
    (the entries kept for the jobs) if the database refused them. `check_referents=False`
    (delivery, which has just read what its rows refer to) skips looking for rows deleted since:
    a row pointing at one makes the foreign key refuse the lot, and the jobs' write sorts it
    out (`_as_deleted`)."""
    if not entries:
        return True
    try:
        with sessions(app)() as db:
            audit = [_sql_row(k, row) for _, k, row in entries if k == "a"]
            visits = [row for _, k, row in entries if k == "v"]
            if check_referents:
                audit, visits = _as_deleted(db, audit, visits)
            if any(v["reason"] in CONSENT_ENDED for v in visits):
                visits = _still_consented(db, visits)
            # Core inserts of plain rows, one statement per table: the ORM's bulk path cost
            # several times more per POST.
            if audit:
                db.execute(_insert_once(db, AuditEntry.__table__), audit)
            if visits:
                db.execute(_insert_once(db, Visit.__table__), [_sql_row("v", v) for v in visits])
            db.commit()
    except SQLAlchemyError as exc:
        # The class only: the statement's parameters hold pseudonyms and subscriber ids.
        log.warning(
            "journal kept for the jobs: the database refused it",
            extra={"entries": len(entries), "error": type(exc).__name__},
        )
        return False
    r, keys = get_redis(app), get_keys(app)
    try:
        r.xdel(keys.journal(), *[entry_id for entry_id, _, _ in entries])
    except redis.RedisError:
        # Written: the jobs write them again, and each row is kept once.
        log.warning("journal entries written but not dropped", extra={"entries": len(entries)})
    return True


def drain(app: Flask, min_age_s: float = DRAIN_AFTER_S, limit: int = 500) -> int:
    """Write journal entries older than `min_age_s` to SQL (the jobs' round), `limit` per
    transaction for up to DRAIN_BUDGET_S; returns how many entries were handled, written or
    dropped as `_as_deleted` and consent say (0 if none, or the database still refuses them)."""
    r, keys = get_redis(app), get_keys(app)
    cutoff_ms = int((time.time() - min_age_s) * 1000)
    started, done = time.monotonic(), 0
    # After a long outage the backlog is every push made meanwhile: pages until it is gone, a
    # bounded time per round so the other jobs go on.
    while time.monotonic() - started < DRAIN_BUDGET_S:
        raw = r.xrange(keys.journal(), "-", f"{cutoff_ms}", count=limit)
        entries = [parse(entry_id, fields) for entry_id, fields in raw]
        if not entries or not write(app, entries):
            break
        done += len(entries)
        if len(entries) < limit:
            break
    if done:
        log.info("journal written by the jobs", extra={"count": done})
    return done


def drop_for(r: redis.Redis, keys: Keys, subscriber_id: int, page: int = 1000) -> int:
    """Drop a subscriber's journal entries (erasure); returns how many went."""
    # A page at a time, not one script over the whole stream: after a long SQL outage the
    # journal holds every push made meanwhile, and a script would hold Redis for all of it. An
    # entry appended behind the pages read is refused at its write (her row is gone by then).
    me, start, dropped = str(subscriber_id), "-", 0
    while True:
        entries = r.xrange(keys.journal(), start, "+", count=page)
        mine = [entry_id for entry_id, fields in entries if fields.get("s") == me]
        if mine:
            dropped += int(r.xdel(keys.journal(), *mine))
        if len(entries) < page:
            return dropped
        ms, seq = entries[-1][0].split("-")
        start = f"{ms}-{int(seq) + 1}"  # the next possible id ('(' needs Redis 6.2)
