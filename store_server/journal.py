"""Audit entries and visits on their way to SQL.

A device event is appended to its outbox and its audit entry to this journal (a Redis stream)
in one atomic step (push.py), so no disclosure reaches a device unrecorded, whatever fails
afterwards. Delivery then writes the journal's new entries to SQL at once, in one transaction,
and drops them; if that fails (the database down, the process killed), the entries stay and the
jobs write them later, without the push being delivered again. Each row carries its identity (an
audit entry its device and event id, a visit its presence), so a row written twice — inline and
by the jobs, or again after its entries could not be dropped — is kept once. Erasure drops a
subscriber's entries, and rows of a subscriber erased meanwhile are never written.
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
from store_server.models import AuditEntry, Consent, Subscriber, Visit
from store_server.redis_store import get_keys, get_redis, run_script

log = logging.getLogger(__name__)
# Exit reasons of a presence ended because its consent ended (occupancy.end_presence callers).
CONSENT_ENDED = frozenset({"withdrawn", "erased", "key_revoked", "expired"})
# An entry this young is still its inline writer's: the jobs leave it be, as they do a pending
# presence event (events.RETRY_AFTER_S).
DRAIN_AFTER_S = 10.0
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


def write(app: Flask, entries: list[Entry], erased_meanwhile: bool = True) -> bool:
    """Write journal entries to SQL in one transaction, then drop them from the journal; False
    (the entries kept for the jobs) if the database refused them. `erased_meanwhile=False`
    (delivery, which has just read the subscribers) skips looking for subscribers gone since:
    a row of one makes the foreign key refuse the lot, and the jobs' write sorts it out."""
    if not entries:
        return True
    try:
        with sessions(app)() as db:
            audit = [_sql_row(k, row) for _, k, row in entries if k == "a"]
            visits = [row for _, k, row in entries if k == "v"]
            if erased_meanwhile:
                # Rows of a subscriber erased meanwhile are never written: erasure reaches them.
                ids = sorted({row["subscriber_id"] for _, _, row in entries})
                alive = set(db.scalars(select(Subscriber.id).where(Subscriber.id.in_(ids))))
                audit = [row for row in audit if row["subscriber_id"] in alive]
                visits = [v for v in visits if v["subscriber_id"] in alive]
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
    """Write journal entries older than `min_age_s` to SQL (the jobs' round); returns how many
    were written (0 if none, or the database still refuses them)."""
    r, keys = get_redis(app), get_keys(app)
    cutoff_ms = int((time.time() - min_age_s) * 1000)
    raw = r.xrange(keys.journal(), "-", f"{cutoff_ms}", count=limit)
    entries = [parse(entry_id, fields) for entry_id, fields in raw]
    if not entries or not write(app, entries):
        return 0
    log.info("journal written by the jobs", extra={"count": len(entries)})
    return len(entries)


# Every entry of one subscriber (field s) dropped, in one atomic step; returns how many.
_DROP_FOR_LUA = """
local n = 0
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
for i = 1, #entries do
  local fields = entries[i][2]
  for f = 1, #fields, 2 do
    if fields[f] == 's' and fields[f + 1] == ARGV[1] then
      n = n + redis.call('XDEL', KEYS[1], entries[i][1])
    end
  end
end
return n
"""


def drop_for(r: redis.Redis, keys: Keys, subscriber_id: int) -> int:
    """Drop a subscriber's journal entries (erasure); returns how many went."""
    return int(run_script(r, _DROP_FOR_LUA, 1, keys.journal(), str(subscriber_id)))
