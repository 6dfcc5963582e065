"""Domain operations on the system of record: merchants, venues, scanners, devices, subscribers,
emitter keys and consents. Callers own the transaction (they commit)."""

from __future__ import annotations

import os
import secrets
import uuid
from datetime import datetime
from typing import Any

from shapely.geometry import Polygon, mapping
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from beacons.signing import new_secret
from store_server.crypto import EMITTER_KEY, SCANNER_SECRET, new_token, seal, token_hash, unseal
from store_server.models import (
    Consent,
    Device,
    EmitterKey,
    Merchant,
    Scanner,
    StaffUser,
    Subscriber,
    Venue,
    Zone,
    utcnow,
)

ZONE_DEFAULTS = {
    # A chair is entered deliberately and left quickly; a cabin's doors shut, so be patient.
    "chair": {"enter_stable_s": 3.0, "exit_absent_s": 8.0, "max_radius_m": 2.0},
    "cabin": {"enter_stable_s": 2.0, "exit_absent_s": 15.0, "max_radius_m": 2.5},
    "area": {"enter_stable_s": 5.0, "exit_absent_s": 30.0, "max_radius_m": 6.0},
}


def create_merchant(db: Session, slug: str, name: str, kind: str) -> Merchant:
    """A new active merchant with its own pseudonym key."""
    m = Merchant(slug=slug, name=name, kind=kind, pseudonym_key=os.urandom(32), rules={})
    db.add(m)
    db.flush()
    return m


def create_staff(
    db: Session, email: str, password: str, role: str, merchant: Merchant | None
) -> StaffUser:
    """A portal account with a scrypt password hash."""
    u = StaffUser(
        email=email.lower(),
        password_hash=generate_password_hash(password),
        role=role,
        merchant_id=merchant.id if merchant else None,
    )
    db.add(u)
    db.flush()
    return u


def create_venue(db: Session, merchant: Merchant, name: str, kind: str) -> Venue:
    """A fixed site or a vehicle of a merchant."""
    v = Venue(merchant_id=merchant.id, name=name, kind=kind)
    db.add(v)
    db.flush()
    return v


def add_zone(
    db: Session, venue: Venue, name: str, kind: str, polygon: Polygon, **timing: float
) -> Zone:
    """A zone polygon in the venue's metric frame, with its kind's presence defaults."""
    params = {**ZONE_DEFAULTS[kind], **timing}
    z = Zone(venue_id=venue.id, name=name, kind=kind, polygon=mapping(polygon), **params)
    db.add(z)
    db.flush()
    return z


def add_scanner(
    db: Session, data_key: str, venue: Venue, name: str, x: float, y: float
) -> tuple[Scanner, str]:
    """A scanner at a position; returns it with its secret (shown once, encrypted at rest)."""
    secret = new_secret()
    s = Scanner(
        venue_id=venue.id,
        name=name,
        x=x,
        y=y,
        secret_enc=seal(data_key, secret.encode(), SCANNER_SECRET),
    )
    db.add(s)
    db.flush()
    return s, secret


def rotate_scanner_secret(db: Session, data_key: str, scanner: Scanner) -> str:
    """Replace a scanner's secret; returns the new one."""
    secret = new_secret()
    scanner.secret_enc = seal(data_key, secret.encode(), SCANNER_SECRET)
    return secret


def scanner_secret(data_key: str, scanner: Scanner) -> str:
    """Decrypt a scanner's secret."""
    return unseal(data_key, scanner.secret_enc, SCANNER_SECRET).decode()


def add_device(db: Session, venue: Venue, zone: Zone | None, name: str) -> Device:
    """A playback device bound to a zone, not yet paired."""
    d = Device(venue_id=venue.id, zone_id=zone.id if zone else None, name=name)
    db.add(d)
    db.flush()
    return d


def issue_device_token(device: Device) -> str:
    """Pair or rotate: a new bearer token, of which only the hash is kept."""
    token = new_token()
    device.token_hash = token_hash(token)
    device.paired_at = utcnow()
    device.revoked_at = None
    return token


def create_subscriber(
    db: Session,
    directory_id: str,
    display_name: str,
    playlists: list[dict[str, Any]],
    taste: dict[str, Any],
    home_area: str | None = None,
) -> Subscriber:
    """A subscriber record under a fresh pseudonymous public id."""
    s = Subscriber(
        public_id=str(uuid.uuid4()),
        directory_id=directory_id,
        display_name=display_name,
        playlists=playlists,
        taste=taste,
        home_area=home_area,
    )
    db.add(s)
    db.flush()
    return s


def provision_emitter(
    db: Session, data_key: str, subscriber: Subscriber, exponent: int = 10, time_base: int = 0
) -> tuple[EmitterKey, bytes]:
    """A new identity key for the subscriber's emitter; returns it (shown once) with the row."""
    key = secrets.token_bytes(16)
    k = EmitterKey(
        subscriber_id=subscriber.id,
        key_enc=seal(data_key, key, EMITTER_KEY),
        exponent=exponent,
        time_base=time_base,
    )
    db.add(k)
    db.flush()
    return k, key


def emitter_key(data_key: str, k: EmitterKey) -> bytes:
    """Decrypt an emitter identity key."""
    return unseal(data_key, k.key_enc, EMITTER_KEY)


def grant_consent(
    db: Session,
    subscriber: Subscriber,
    merchant: Merchant | None,
    share: str,
    statistics: bool,
    valid_until: datetime | None,
) -> Consent:
    """Record a consent (receipt details are filled by the opt-in flow)."""
    if share not in ("playlist", "preferences"):
        raise ValueError("share must be playlist or preferences")
    c = Consent(
        subscriber_id=subscriber.id,
        merchant_id=merchant.id if merchant else None,
        share=share,
        statistics=statistics,
        valid_until=valid_until,
        receipt_id=str(uuid.uuid4()),
        receipt={},
    )
    db.add(c)
    db.flush()
    return c


def withdraw_all(db: Session, subscriber: Subscriber) -> int:
    """Withdraw every live consent of a subscriber; returns how many."""
    n = 0
    for c in db.scalars(
        select(Consent).where(
            Consent.subscriber_id == subscriber.id, Consent.withdrawn_at.is_(None)
        )
    ):
        c.withdrawn_at = utcnow()
        n += 1
    return n
