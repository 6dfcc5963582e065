"""The opt-in itself, outside Flask: subscriber from directory and streaming profile, emitter key,
consent, signed receipt, single-use markers, in one transaction; then the resolver refresh."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from beacons import provisioning
from store_server import receipts, services
from store_server.db import sessions
from store_server.directory import Account
from store_server.jobs import refresh_resolver
from store_server.models import Consent, EmitterKey, Merchant, Subscriber, utcnow
from store_server.occupancy import end_presence
from store_server.optin.choices import Choices, end_of_day
from store_server.optin.links import OptinLink
from store_server.optin.models import UsedNonce
from store_server.rights import live_consents
from store_server.streaming import get_streaming


class Replayed(Exception):
    """The link (single-use) or the form was already used."""


@dataclass(frozen=True)
class OptinResult:
    """What the subscriber sees after opting in."""

    receipt_id: str
    receipt: dict[str, Any]
    jws: str
    provisioning: provisioning.Provisioning | None  # None: the emitter was already provisioned
    superseded: int


def controller(app: Flask) -> receipts.Controller:
    """The controller named on receipts and pages, from configuration."""
    return receipts.Controller(**app.config["OPTIN_CONTROLLER"])


def nonce_marker(value: str) -> str:
    """What is stored for a used nonce: its hash, so the table holds nothing reusable."""
    return hashlib.sha256(value.encode()).hexdigest()


def complete_optin(
    app: Flask,
    account: Account,
    link: OptinLink,
    choices: Choices,
    *,
    language: str,
    form_nonce: str,
    withdraw_url: str,
) -> OptinResult:
    """Record the consent and everything it needs; Replayed if the link or form was used."""
    profile = get_streaming(app).profile(account.directory_id)
    data_key = app.config["DATA_KEY"]
    superseded: list[Consent] = []
    with sessions(app)() as db:
        merchant = db.get(Merchant, link.merchant_id)
        if merchant is None:
            raise LookupError("merchant gone")
        sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == account.directory_id))
        playlists = list(profile.playlists) if profile else []
        taste = dict(profile.taste) if profile else {}
        if sub is None:
            sub = services.create_subscriber(
                db, account.directory_id, account.display_name, playlists, taste
            )
        else:
            sub.display_name, sub.playlists, sub.taste = account.display_name, playlists, taste
        target = None if choices.all_merchants else merchant
        now = utcnow()
        # A new answer for the same merchant (or for all) replaces the previous one, if it is
        # still live: one that ran out stays "expired" on the record, not withdrawn by her. An
        # answer for all given at this merchant is her answer here too: an earlier one for this
        # merchant alone would otherwise still win here (resolver.applicable_consent).
        for c in db.scalars(
            select(Consent).where(
                Consent.subscriber_id == sub.id,
                Consent.withdrawn_at.is_(None),
                or_(Consent.valid_until.is_(None), Consent.valid_until > now),
                or_(Consent.merchant_id.is_(None), Consent.merchant_id == merchant.id)
                if target is None
                else Consent.merchant_id == target.id,
            )
        ):
            c.withdrawn_at = now
            superseded.append(c)
        if choices.statistics:
            sub.home_area = choices.home_area
        elif not any(c.statistics for c in live_consents(db, sub.id)):
            # The home area is kept only under a live statistics consent, as on withdrawal.
            sub.home_area = None
        key_row = db.scalar(
            select(EmitterKey).where(
                EmitterKey.subscriber_id == sub.id, EmitterKey.revoked_at.is_(None)
            )
        )
        doc = None
        if key_row is None:
            key_row, key = services.provision_emitter(db, data_key, sub)
            doc = provisioning.build(
                key,
                key_row.exponent,
                key_row.time_base,
                app.config["OPTIN_RESOLVER_ID"],
                f"em-{key_row.id}",
                int(time.time()),
            )
        valid_until = end_of_day(now, app.config["OPTIN_TIMEZONE"]) if choices.today_only else None
        consent = services.grant_consent(
            db, sub, target, choices.share, choices.statistics, valid_until
        )
        consent.valid_from = now
        claims = receipts.build(
            receipt_id=consent.receipt_id,
            timestamp=int(now.timestamp()),
            language=language,
            principal_id=sub.public_id,
            controller=controller(app),
            policy_url=app.config["OPTIN_POLICY_URL"],
            withdraw_url=withdraw_url,
            scope=receipts.Scope(
                merchant.name if target else None,
                choices.share,
                choices.statistics,
                # In the zone whose midnight ends it: 00:00+01:00 reads as "today", while the
                # same instant in UTC (23:00+00:00) read as an hour before midnight.
                valid_until.astimezone(ZoneInfo(app.config["OPTIN_TIMEZONE"]))
                if valid_until
                else None,
            ),
        )
        jws = receipts.sign(receipts.signing_key(data_key), claims)
        consent.receipt = {"receipt": claims, "jws": jws}
        db.add(UsedNonce(nonce=nonce_marker(form_nonce)))
        if link.jti:
            db.add(UsedNonce(nonce=nonce_marker("jti:" + link.jti)))
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
            raise Replayed from None
        subscriber_id = sub.id
    refresh_resolver(app)
    if superseded:
        end_presence(app, subscriber_id, "withdrawn")
    return OptinResult(consent.receipt_id, claims, jws, doc, len(superseded))


def link_used(app: Flask, jti: str) -> bool:
    """Whether a single-use link was already used to opt in."""
    with sessions(app)() as db:
        return db.get(UsedNonce, nonce_marker("jti:" + jti)) is not None


def form_used(app: Flask, form_nonce: str) -> bool:
    """Whether a consent form was already submitted."""
    with sessions(app)() as db:
        return db.get(UsedNonce, nonce_marker(form_nonce)) is not None
