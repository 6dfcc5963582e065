"""Subscriber rights: withdrawal, export (access and portability) and erasure.

Withdrawal and erasure take effect everywhere at once: SQL is committed first, then the resolver
table is rebuilt (no new sighting resolves), then live presences end and devices get a revoke.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from beacons import provisioning
from store_server import journal, outbox, services
from store_server.crypto import pseudonym
from store_server.db import sessions
from store_server.jobs import refresh_resolver
from store_server.models import (
    AuditEntry,
    Consent,
    Device,
    EmitterKey,
    Merchant,
    Subscriber,
    Venue,
    Visit,
    utcnow,
)
from store_server.occupancy import end_presence, forget_everywhere
from store_server.redis_store import get_keys, get_redis
from store_server.sessions import end_all_sessions, subscriber_principal


def consent_status(c: Consent, now: datetime) -> str:
    """active, withdrawn or expired."""
    if c.withdrawn_at is not None:
        return "withdrawn"
    if c.valid_until is not None and _aware(c.valid_until) <= now:
        return "expired"
    return "active"


def _aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored as UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def live_consents(db: Session, subscriber_id: int) -> list[Consent]:
    """Consents of a subscriber neither withdrawn nor expired."""
    now = utcnow()
    return list(
        db.scalars(
            select(Consent).where(
                Consent.subscriber_id == subscriber_id,
                Consent.withdrawn_at.is_(None),
                or_(Consent.valid_until.is_(None), Consent.valid_until > now),
            )
        )
    )


def withdraw(app: Flask, subscriber_id: int, consent_id: int | None = None) -> int:
    """Withdraw one consent (or all when None) and make it effective; returns how many."""
    with sessions(app)() as db:
        n = 0
        for c in live_consents(db, subscriber_id):
            if consent_id is None or c.id == consent_id:
                c.withdrawn_at = utcnow()
                n += 1
        if not statistics_live(db, subscriber_id):
            sub = db.get(Subscriber, subscriber_id)
            if sub is not None:
                sub.home_area = None  # kept only under a live statistics consent
        db.commit()
    if n:
        refresh_resolver(app)
        # Every presence ends, even one a remaining consent covers: the state held the old scope;
        # the next sighting starts a fresh presence under what is still allowed.
        end_presence(app, subscriber_id, "withdrawn")
    return n


def statistics_live(db: Session, subscriber_id: int) -> bool:
    """Whether a live consent includes the statistics scope."""
    return any(c.statistics for c in live_consents(db, subscriber_id))


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else _aware(dt).isoformat()


def _epoch_iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def export(
    db: Session, subscriber: Subscriber, whereabouts: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """Everything held about a subscriber, as one JSON-ready document; `whereabouts` is her
    live presence (occupancy.whereabouts), which Redis holds and SQL does not."""
    now = utcnow()
    merchants = dict(db.execute(select(Merchant.id, Merchant.name)).all())
    devices = dict(db.execute(select(Device.id, Device.name)).all())
    venue_rows = db.execute(select(Venue.id, Venue.name, Venue.merchant_id)).all()
    venues = {vid: name for vid, name, _m in venue_rows}
    venue_merchant = {vid: mid for vid, _n, mid in venue_rows}
    sid = subscriber.id
    consents = db.scalars(select(Consent).where(Consent.subscriber_id == sid).order_by(Consent.id))
    keys = db.scalars(select(EmitterKey).where(EmitterKey.subscriber_id == sid))
    visits = db.scalars(select(Visit).where(Visit.subscriber_id == sid).order_by(Visit.started_at))
    audit = db.scalars(
        select(AuditEntry)
        .where(AuditEntry.subscriber_id == sid)
        .order_by(AuditEntry.at, AuditEntry.id)
    )
    return {
        "format": "collective-mood-export/1",
        "exported_at": now.isoformat(),
        "profile": {
            "public_id": subscriber.public_id,
            "directory_id": subscriber.directory_id,
            "display_name": subscriber.display_name,
            "playlists": subscriber.playlists,
            "taste": subscriber.taste,
            "home_area": subscriber.home_area,
            "created_at": _iso(subscriber.created_at),
        },
        "emitters": [
            {
                "id": k.id,
                "exponent": k.exponent,
                "time_base": k.time_base,
                "created_at": _iso(k.created_at),
                "revoked_at": _iso(k.revoked_at),
            }
            for k in keys
        ],
        "consents": [
            {
                "id": c.id,
                "merchant": merchants.get(c.merchant_id) if c.merchant_id else None,
                "all_merchants": c.merchant_id is None,
                "share": c.share,
                "statistics": c.statistics,
                "valid_from": _iso(c.valid_from),
                "valid_until": _iso(c.valid_until),
                "withdrawn_at": _iso(c.withdrawn_at),
                "status": consent_status(c, now),
                "receipt_id": c.receipt_id,
                "receipt": c.receipt,
            }
            for c in consents
        ],
        "visits": [
            {
                "merchant": merchants.get(v.merchant_id),
                "venue": venues.get(v.venue_id),
                "zone": v.zone,
                "started_at": _iso(v.started_at),
                "ended_at": _iso(v.ended_at),
                "dwell_s": v.dwell_s,
            }
            for v in visits
        ],
        "presence_now": [
            {
                "merchant": merchants.get(venue_merchant.get(w["venue_id"])),
                "venue": venues.get(w["venue_id"]),
                "zone": w["zone"],
                "since": _epoch_iso(w["since"]),
                "last_heard": _epoch_iso(w["last_heard"]),
            }
            for w in whereabouts
            if w["venue_id"] in venues
        ],
        "disclosures": [
            {
                "at": _iso(a.at),
                "action": a.action,
                "merchant": merchants.get(a.merchant_id),
                "device": devices.get(a.device_id),
                "pseudonym": a.pseudonym,
                "scope": a.scope,
                "receipt_id": a.receipt_id,
                "reason": a.reason,
            }
            for a in audit
        ],
    }


def erase(app: Flask, subscriber_id: int) -> bool:
    """Delete a subscriber from SQL, Redis (her sign-ins included) and device outboxes, leaving a
    tombstone; False if there was nobody to erase."""
    with sessions(app)() as db:
        sub = db.get(Subscriber, subscriber_id)
        if sub is None:
            return False
        now = utcnow()
        for c in live_consents(db, subscriber_id):
            c.withdrawn_at = now
        for k in db.scalars(select(EmitterKey).where(EmitterKey.subscriber_id == subscriber_id)):
            k.revoked_at = now
        public_id, directory_id = sub.public_id, sub.directory_id
        by_merchant: dict[int, tuple[bytes, list[int]]] = {
            m.id: (m.pseudonym_key, []) for m in db.scalars(select(Merchant))
        }
        for device_id, merchant_id in db.execute(
            select(Device.id, Venue.merchant_id).join(Venue, Device.venue_id == Venue.id)
        ):
            by_merchant[merchant_id][1].append(device_id)
        db.commit()
    refresh_resolver(app)
    # Connected devices get the revoke now; what is left pending about the person then goes,
    # so no outbox keeps a trace (an offline device's push expires by itself, PUSH_TTL_S).
    end_presence(app, subscriber_id, "erased")
    forget_everywhere(app, subscriber_id)
    r, keys = get_redis(app), get_keys(app)
    for key, device_ids in by_merchant.values():
        outbox.drop_for(r, keys, device_ids, pseudonym(key, public_id))
    # Audit entries and visits not yet in SQL go too (and any written later are refused).
    journal.drop_for(r, keys, subscriber_id)
    # Her sign-ins in other browsers too: each kept her principal's HMAC in Redis for up to a
    # week, and a signed-in page of someone erased has nothing left to show.
    end_all_sessions(app, subscriber_principal(directory_id))
    with sessions(app)() as db:
        # Her row locked first: a journal write that has inserted rows about her holds it (the
        # foreign key's share lock) until it commits, so they are committed, and deleted below,
        # before this DELETE reads the log; a later one fails the foreign key. Unlocked, the
        # subscriber's DELETE waited for such a write, and ON DELETE SET NULL kept its rows.
        db.execute(select(Subscriber.id).where(Subscriber.id == subscriber_id).with_for_update())
        db.execute(delete(AuditEntry).where(AuditEntry.subscriber_id == subscriber_id))
        db.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
        db.add(AuditEntry(action="erased", subscriber_id=None, reason="subscriber request"))
        db.commit()
    return True


def replace_emitter(
    app: Flask, subscriber_id: int, issue_new: bool
) -> provisioning.Provisioning | None:
    """Revoke every emitter key of a subscriber (a lost phone or wearable), effective at the
    resolver at once; with `issue_new`, provision a fresh key and return its document."""
    doc = None
    with sessions(app)() as db:
        sub = db.get(Subscriber, subscriber_id)
        if sub is None:
            return None
        now = utcnow()
        for k in db.scalars(
            select(EmitterKey).where(
                EmitterKey.subscriber_id == subscriber_id, EmitterKey.revoked_at.is_(None)
            )
        ):
            k.revoked_at = now
        if issue_new:
            row, key = services.provision_emitter(db, app.config["DATA_KEY"], sub)
            doc = provisioning.build(
                key,
                row.exponent,
                row.time_base,
                app.config["OPTIN_RESOLVER_ID"],
                f"em-{row.id}",
                int(now.timestamp()),
            )
        db.commit()
    refresh_resolver(app)
    # Whoever holds the old key must not stay present under this subscriber's consent.
    end_presence(app, subscriber_id, "key_revoked")
    return doc
