"""Retention: what is kept and for how long, enforced by `python -m store_server retention`.

Raw sightings are never stored. RETENTION_DAYS (default 90) bounds visits, the disclosure log and
the proof of consents that have ended; a visit no statistics consent covers any more (it was
withdrawn) goes at the next run. Data that only an ended consent justified goes at the next
run: the emitter key, the copy of the streaming profile, the home area; so does a revoked emitter
key; a subscriber with nothing left on record is deleted altogether. Erasure tombstones stay:
they identify nobody.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import ColumnElement, delete, exists, or_, select
from sqlalchemy.orm import Session

from store_server.db import sessions
from store_server.models import (
    AuditEntry,
    Consent,
    EmitterKey,
    Subscriber,
    Visit,
    statistics_cover,
    utcnow,
)
from store_server.occupancy import end_presence
from store_server.optin.models import UsedNonce
from store_server.redis_store import get_keys, get_redis


def _live(now: datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (
        Consent.withdrawn_at.is_(None),
        or_(Consent.valid_until.is_(None), Consent.valid_until > now),
    )


def purge(db: Session, now: datetime, days: int, nonce_max_age_s: int) -> dict[str, int]:
    """Delete what is past retention; returns counts per kind (the caller commits)."""
    cutoff = now - timedelta(days=days)
    out: dict[str, int] = {}
    out["visits"] = db.execute(delete(Visit).where(Visit.started_at < cutoff)).rowcount
    # A visit no statistics consent covers any more (withdrawn: "stop") feeds no report again
    # (analytics.job reads only covered ones) and was kept the whole period for nothing.
    if db.get_bind().dialect.name == "sqlite":
        # NOT IN a join: SQLite indexes consents for a join only (see analytics.job), and a
        # correlated NOT EXISTS scanned every consent for every visit.
        uncovered = Visit.id.not_in(select(Visit.id).join(Consent, statistics_cover()))
    else:
        # NOT EXISTS, alone in its statement: PostgreSQL hashes consents once (an anti-join),
        # where a NOT IN larger than work_mem is scanned again for every visit.
        uncovered = ~exists().where(statistics_cover())
    out["visits"] += db.execute(delete(Visit).where(uncovered)).rowcount
    out["disclosures"] = db.execute(
        delete(AuditEntry).where(AuditEntry.at < cutoff, AuditEntry.action != "erased")
    ).rowcount
    out["ended_consents"] = db.execute(
        delete(Consent).where(
            or_(
                Consent.withdrawn_at < cutoff,
                Consent.valid_until < cutoff,
            )
        )
    ).rowcount
    live_subscriber = exists().where(Consent.subscriber_id == Subscriber.id, *_live(now))
    stats_live = exists().where(
        Consent.subscriber_id == Subscriber.id, Consent.statistics.is_(True), *_live(now)
    )
    unconsented = select(Subscriber.id).where(~live_subscriber)
    # A revoked key (a lost phone replaced, or revoked only) resolves nothing any more, yet only
    # keys of subscribers with no live consent went: each replacement kept one more for good.
    out["emitter_keys"] = db.execute(
        delete(EmitterKey).where(
            or_(EmitterKey.subscriber_id.in_(unconsented), EmitterKey.revoked_at.is_not(None))
        )
    ).rowcount
    cleared = 0
    for sub in db.scalars(select(Subscriber).where(~stats_live)):
        live = db.scalar(select(exists().where(Consent.subscriber_id == sub.id, *_live(now))))
        if not live and (sub.playlists or sub.taste):
            sub.playlists, sub.taste = [], {}
            cleared += 1
        if sub.home_area is not None:
            sub.home_area = None
            cleared += 1
    out["profiles_cleared"] = cleared
    db.flush()
    empty = select(Subscriber.id).where(
        ~exists().where(Consent.subscriber_id == Subscriber.id),
        ~exists().where(Visit.subscriber_id == Subscriber.id),
    )
    # Locked, as erasure locks its subscriber (rights.erase): a journal write under way about
    # one of them commits first, and its audit rows go with the rest.
    gone = list(db.scalars(empty.with_for_update()))
    if gone:
        db.execute(delete(AuditEntry).where(AuditEntry.subscriber_id.in_(gone)))
        db.execute(delete(Subscriber).where(Subscriber.id.in_(gone)))
    out["subscribers"] = len(gone)
    nonce_cutoff = now - timedelta(seconds=nonce_max_age_s)
    out["used_nonces"] = db.execute(
        delete(UsedNonce).where(UsedNonce.used_at < nonce_cutoff)
    ).rowcount
    return out


def end_expired_presences(app: Flask) -> int:
    """End the live presence of anyone present whose consents have all ended; returns how many."""
    r, keys = get_redis(app), get_keys(app)
    present = {int(m.split(":")[1]) for m in r.zrange(keys.last_seen(), 0, -1)}
    if not present:
        return 0
    now = utcnow()
    with sessions(app)() as db:
        covered = set(
            db.scalars(
                select(Consent.subscriber_id).where(Consent.subscriber_id.in_(present), *_live(now))
            )
        )
    ended = 0
    for sid in sorted(present - covered):
        end_presence(app, sid, "expired")
        ended += 1
    return ended


def run(app: Flask, now: datetime | None = None, days: int | None = None) -> dict[str, int]:
    """One retention round: end expired presences, then purge SQL."""
    from store_server.jobs import refresh_resolver

    now = now or utcnow()
    days = app.config["RETENTION_DAYS"] if days is None else days
    if days < 1:
        raise ValueError("retention must be at least 1 day")
    # The resolver first, so an expired consent's identifiers stop resolving before presence ends.
    refresh_resolver(app)
    out = {"presences_ended": end_expired_presences(app)}
    max_age = max(app.config["OPTIN_LINK_MAX_AGE_S"], app.config["OPTIN_SESSION_MAX_AGE_S"])
    with sessions(app)() as db:
        out.update(purge(db, now, days, max_age))
        db.commit()
    return out
