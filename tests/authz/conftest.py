"""Fixtures of the authorisation matrix: one composed app (store server + portal) on fresh stores,
merchant A and B from the demo seed, and one principal per role of `matrix.ROLES`, each signed
in through the real forms (or holding a real scanner secret, device token or metrics token).

Principals are made once per session; every cell runs on a fresh test client carrying a copy of
its principal's cookies, so a cell that signs in again or signs out changes nothing for the next.
Cells that would change what other cells rely on (revoking a device, erasing a subscriber) get a
fresh object or a fresh subscriber of their own.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from shapely.geometry import box, mapping
from sqlalchemy import select

from analytics.models import Report
from beacons.signing import signed_headers
from merchant_portal.operator import invite_link
from store_server import services
from store_server.db import sessions
from store_server.models import Consent, Merchant, Subscriber, Venue, Zone
from store_server.optin.links import make_token
from store_server.optin.web import cookie_name
from store_server.positioning import simulate
from store_server.seed import CAR_LOGIN, SALON_LOGIN, seed_demo
from tests.conftest import LiveServer, composed_app
from tests.store_server.optin.helpers import make_account, opt_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NONCE = re.compile(r'name="nonce" value="([^"]+)"')
METRICS_TOKEN = "authz-metrics-" + "0" * 24
A_WEEK, B_WEEK = date(2026, 11, 9), date(2026, 11, 16)


@dataclass
class Principal:
    """One role's credentials: cookies of its sign-ins, CSRF tokens of those sessions, and the
    secret it would type into any sign-in form (email/username/name, password/secret/token)."""

    role: str
    ip: str
    credentials: tuple[str, str] = ("", "")
    cookies: dict[str, str] = field(default_factory=dict)
    portal_csrf: str = ""
    sub_csrf: str = ""
    bearer: str | None = None  # device token or metrics token, sent as Authorization: Bearer
    scanner: tuple[str, str] | None = None  # (name, secret): every request is signed
    consent_id: int | None = None  # a subscriber's own consent at merchant A
    receipt_id: str | None = None
    jws: str = ""

    def client(self, app: Flask) -> FlaskClient:
        """A new test client from this principal's address, carrying its cookies."""
        c = app.test_client()
        c.environ_base["REMOTE_ADDR"] = self.ip
        for name, value in self.cookies.items():
            c.set_cookie(name, value)
        return c

    def headers(self, body: bytes) -> dict[str, str]:
        """What this principal adds to every request it sends."""
        if self.scanner is not None:
            signed = signed_headers(self.scanner[0], self.scanner[1], body)
            # Only the authentication headers: the request keeps its own content type.
            return {k: v for k, v in signed.items() if k.startswith("X-CM-")}
        if self.bearer is not None:
            return {"Authorization": f"Bearer {self.bearer}"}
        return {}

    def cookie_header(self) -> str:
        """The cookies as a browser would send them to the Socket.IO endpoint."""
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


@dataclass
class World:
    """Merchant A's and B's objects, subscriber A's consent, and one principal per role."""

    app: Flask
    merchant_a: int
    venue_a: int
    scratch_venue: int  # A's venue whose zones the cells re-upload, unchanged
    flat_venue: int  # A's venue laid out like the positioning package's synthetic flat
    scratch_scanner: int
    scratch_zone: int
    survey_csv: bytes
    optin_token: str
    principals: dict[str, Principal]
    invite_token: str = ""

    def capture(self, p: Principal, c: FlaskClient) -> Principal:
        """Fetch both CSRF tokens in this client's sessions, then keep its cookies."""
        p.portal_csrf = csrf_of(c.get("/portal/login").get_data(as_text=True))
        p.sub_csrf = csrf_of(c.get("/optin/verify").get_data(as_text=True))
        for name in ("session", cookie_name(self.app)):
            cookie = c.get_cookie(name)
            if cookie is not None:
                p.cookies[name] = cookie.value
        return p

    def fresh_subscriber(self, role: str) -> Principal:
        """A new directory account that opted in at merchant A, signed in."""
        username, password = make_account(self.app, f"Fresh {role}")
        p = Principal(role, _ip(), (username, password))
        c = p.client(self.app)
        done = opt_in(c, self.optin_token, username, password)
        assert done.status_code == 200, done.text
        _own_consent(self.app, p, username)
        return self.capture(p, c)

    def fresh_session(self, role: str) -> Principal:
        """The role signed in again in a browser of its own: a cell that signs in or out ends
        that browser's server-side session, which must not be the one every other cell uses."""
        p = self.principals[role]
        if role in ("sub", "sub2"):
            return self.fresh_subscriber(role)
        if role not in STAFF_ROLES:
            return p
        fresh = Principal(role, _ip(), p.credentials)
        c = fresh.client(self.app)
        portal_login(c, *fresh.credentials)
        if role == "auditor":
            auditor_login(c, *fresh.credentials)
        return self.capture(fresh, c)

    def fresh_device(self, paired: bool = False) -> tuple[int, str | None]:
        """A new device in A's scratch zone; with its token when paired."""
        with sessions(self.app)() as db:
            venue, zone = db.get(Venue, self.scratch_venue), db.get(Zone, self.scratch_zone)
            device = services.add_device(db, venue, zone, f"authz-{secrets.token_hex(4)}")
            token = services.issue_device_token(device) if paired else None
            db.commit()
            return device.id, token

    def fresh_invite(self) -> str:
        """An owner invitation of a new merchant, as the operator's console issues it."""
        with sessions(self.app)() as db:
            slug = f"invited-{secrets.token_hex(4)}"
            m = services.create_merchant(db, slug, slug, "shop")
            owner = services.create_staff(
                db, f"{slug}@example.test", secrets.token_hex(16), "owner", m
            )
            db.commit()
            with self.app.test_request_context():
                return invite_link(owner).rsplit("/", 1)[1]

    def pairing_code(self) -> str:
        """A pairing code of a new device, as the portal shows its owner."""
        device_id, _ = self.fresh_device()
        return self.app.extensions["cm_portal_pairing"].issue(device_id)


def _ip() -> str:
    # Rate limits count per address: every principal comes from its own.
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def csrf_of(html: str) -> str:
    """The CSRF token of a rendered form."""
    m = CSRF.search(html)
    assert m, "page has no CSRF field"
    return m.group(1)


def _own_consent(app: Flask, p: Principal, username: str) -> None:
    with sessions(app)() as db:
        consent = db.scalar(
            select(Consent)
            .join(Subscriber, Consent.subscriber_id == Subscriber.id)
            .where(Subscriber.directory_id == f"dir:{username}")
            .order_by(Consent.id)
        )
        p.consent_id, p.receipt_id = consent.id, consent.receipt_id
        p.jws = consent.receipt.get("jws", "")


def portal_login(c: FlaskClient, email: str, password: str) -> None:
    """Sign in through the portal's form."""
    token = csrf_of(c.get("/portal/login").get_data(as_text=True))
    resp = c.post("/portal/login", data={"email": email, "password": password, "csrf_token": token})
    assert resp.status_code == 302, resp.text


def auditor_login(c: FlaskClient, email: str, password: str) -> None:
    """Sign in through the auditor view's form."""
    token = csrf_of(c.get("/auditor/signin").get_data(as_text=True))
    resp = c.post(
        "/auditor/signin", data={"email": email, "password": password, "csrf_token": token}
    )
    assert resp.status_code == 303, resp.text


@pytest.fixture(scope="session")
def authz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The composed app (every route and namespace) on a fresh database and Redis prefix, with
    the metrics endpoint behind a bearer token as in production."""
    with composed_app(tmp_path_factory.mktemp("authz"), METRICS_TOKEN=METRICS_TOKEN) as app:
        yield app


@pytest.fixture(scope="session")
def world(authz_app: Flask) -> World:
    """Merchants A (the demo salon) and B (the demo car), their staff, the programme's operator
    and auditor, two subscribers, and a principal for every role."""
    app = authz_app
    key = app.config["DATA_KEY"]
    logins = {
        "staff": ("chair@authz.test", "authz-staff-2026"),
        "operator": ("ops@authz.test", "authz-operator-2026"),
        "auditor": ("dpo@authz.test", "authz-auditor-2026"),
        "suspended": ("owner@suspended.authz.test", "authz-suspended-2026"),
    }
    flat = simulate.flat()
    with sessions(app)() as db:
        demo = seed_demo(db, key)
        a = db.scalar(select(Merchant).where(Merchant.slug == "salon-meche"))
        b = db.scalar(select(Merchant).where(Merchant.slug == "vtc-leon"))
        services.create_staff(db, *logins["staff"], "staff", a)
        services.create_staff(db, *logins["operator"], "operator", None)
        services.create_staff(db, *logins["auditor"], "auditor", None)
        c = services.create_merchant(db, "authz-suspended", "Suspended shop", "shop")
        services.create_venue(db, c, "Suspended shop", "site")
        services.create_staff(db, *logins["suspended"], "owner", c)
        venue_a = db.scalar(select(Venue).where(Venue.merchant_id == a.id).order_by(Venue.id))
        scratch = services.create_venue(db, a, "Authz scratch", "site")
        zone = services.add_zone(db, scratch, "bac", "area", box(0, 0, 4, 3))
        scanner, _secret = services.add_scanner(db, key, scratch, "authz-scratch-scanner", 2.0, 1.5)
        flat_venue = services.create_venue(db, a, "Authz flat", "site")
        for name, geom in flat.zones.items():
            services.add_zone(db, flat_venue, name, "area", geom)
        for name, (x, y) in flat.scanners.items():
            services.add_scanner(db, key, flat_venue, f"authz-flat-{name}", x, y)
        # Both merchants have a report, of different weeks: B asking for A's week finds nothing.
        for merchant, week in ((a, A_WEEK), (b, B_WEEK)):
            db.add(
                Report(
                    merchant_id=merchant.id,
                    period_start=week,
                    period_end=date.fromordinal(week.toordinal() + 7),
                    kind="weekly",
                    k=5,
                    epsilon=0.0,
                    delta=0.0,
                    body={
                        "guarantees": {"k": 5, "epsilon": 0.0},
                        "taste": [{"area": "*", "subscribers": 12, "top_genres": "pop"}],
                        "catchment": None,
                    },
                )
            )
        db.commit()
        ids = (a.id, b.id, venue_a.id, scratch.id, flat_venue.id, scanner.id, zone.id)
        merchant_c = c.id
        venue_b = db.scalar(select(Venue.id).where(Venue.merchant_id == b.id))
    merchant_a, merchant_b, venue_a_id, scratch_id, flat_id, scanner_id, zone_id = ids
    survey = flat.readings(simulate.survey_path())
    survey["scanner"] = "authz-flat-" + survey["scanner"]
    w = World(
        app,
        merchant_a,
        venue_a_id,
        scratch_id,
        flat_id,
        scanner_id,
        zone_id,
        survey.to_csv(index=False).encode(),
        make_token(app.config["SECRET_KEY"], merchant_a, venue_a_id),
        {},
    )
    w.invite_token = w.fresh_invite()
    scanner_name = "demo-salon-scanner-1"
    scanner_secret = demo.scanners[scanner_name]["secret"]
    device_name = "demo-chair-2-speaker"
    p = w.principals
    p["anon"] = Principal("anon", _ip())
    p["scanner"] = Principal(
        "scanner", _ip(), (scanner_name, scanner_secret), scanner=(scanner_name, scanner_secret)
    )
    p["device"] = Principal(
        "device", _ip(), (device_name, demo.devices[device_name]), bearer=demo.devices[device_name]
    )
    p["scraper"] = Principal("scraper", _ip(), ("prometheus", METRICS_TOKEN), bearer=METRICS_TOKEN)
    for role, creds in (
        ("owner", SALON_LOGIN),
        ("staff", logins["staff"]),
        ("rival", CAR_LOGIN),
        ("suspended", logins["suspended"]),
        ("operator", logins["operator"]),
        ("auditor", logins["auditor"]),
    ):
        p[role] = Principal(role, _ip(), creds)
    for role in ("anon", "scanner", "device", "scraper"):
        w.capture(p[role], p[role].client(app))
    for role in STAFF_ROLES:
        c = p[role].client(app)
        portal_login(c, *p[role].credentials)
        if role == "auditor":
            auditor_login(c, *p[role].credentials)
        w.capture(p[role], c)
    # Signed in while merchant C was active; then the programme suspends C through its console.
    op = p["operator"].client(app)
    suspended = op.post(
        f"/portal/operator/merchants/{merchant_c}/status",
        data={"status": "suspended", "csrf_token": p["operator"].portal_csrf},
    )
    assert suspended.status_code == 302, suspended.text
    p["sub"] = w.fresh_subscriber("sub")
    # The other subscriber has consents of their own, at merchant B.
    username, password = make_account(app, "Other subscriber")
    p["sub2"] = Principal("sub2", _ip(), (username, password))
    c = p["sub2"].client(app)
    token_b = make_token(app.config["SECRET_KEY"], merchant_b, venue_b)
    assert opt_in(c, token_b, username, password).status_code == 200
    _own_consent(app, p["sub2"], username)
    w.capture(p["sub2"], c)
    return w


@pytest.fixture(scope="session")
def authz_server(authz_app: Flask, world: World) -> Iterator[LiveServer]:
    """The matrix app served on a spare port, for real Socket.IO clients."""
    server = LiveServer(authz_app).start()
    yield server
    server.stop()


STAFF_ROLES = ("owner", "staff", "rival", "suspended", "operator", "auditor")
# Which cells get objects of their own (by endpoint), so that cells stay independent.
# Signing in or out ends the browser's server-side session: those cells sign in afresh.
FRESH_SESSION = {
    "portal.login",
    "portal.logout",
    "auditor.signin",
    "auditor.signout",
    "rights.signin",
    "rights.signout",
    "optin.signin",
}
FRESH_DEVICE = {"portal.pair", "portal.rotate", "portal.revoke"}
# Subscriber endpoints that change the signed-in subscriber: those roles act as a fresh one.
FRESH_SELF = {
    "rights.withdraw_one": ("sub",),
    "rights.withdraw_all": ("sub", "sub2"),
    "rights.emitter_replace": ("sub", "sub2"),
    "rights.emitter_revoke": ("sub", "sub2"),
    "rights.erase": ("sub", "sub2"),
}
ZONES = json.dumps(
    {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"name": "bac", "kind": "area"},
             "geometry": mapping(box(0, 0, 4, 3))},
        ],
    }
)  # fmt: skip


@dataclass
class Cell:
    """One request of the matrix: who sends it, where, and with what."""

    principal: Principal
    path: str
    kwargs: dict[str, Any]
    body: bytes


def build_cell(w: World, method: str, endpoint: str, rule: str, role: str) -> Cell:
    """The request `role` sends to `rule`, addressed to merchant A's or subscriber A's objects."""
    p = w.principals[role]
    if role in FRESH_SELF.get(endpoint, ()):
        p = w.fresh_subscriber(role)
    elif endpoint in FRESH_SESSION:
        p = w.fresh_session(role)
    target = p if p.role == "sub" and p is not w.principals["sub"] else w.principals["sub"]
    device_id = w.fresh_device()[0] if endpoint in FRESH_DEVICE else None
    # Accepting an invitation spends it; reading one does not.
    invite = None
    if endpoint == "portal.invite":
        invite = w.fresh_invite() if method == "POST" else w.invite_token
    values: dict[str, Any] = {
        "venue_id": {
            "portal.upload_zones": w.scratch_venue,
            "portal.upload_survey": w.flat_venue,
        }.get(endpoint, w.venue_a),
        "device_id": device_id,
        "scanner_id": w.scratch_scanner,
        "merchant_id": w.merchant_a,
        "week": A_WEEK.isoformat(),
        "consent_id": target.consent_id,
        "receipt_id": target.receipt_id,
        "token": invite if invite is not None else w.optin_token,
        "kind": "svg",
        "filename": "optin.css" if rule.startswith("/optin/") else "portal.css",
    }
    path = re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: str(values[m.group(1)]), rule)
    kwargs, body = _body(w, endpoint, p, path)
    return Cell(p, path, kwargs, body)


def _body(w: World, endpoint: str, p: Principal, path: str) -> tuple[dict[str, Any], bytes]:
    """A valid request body for the endpoint, in the principal's sessions (CSRF included)."""
    csrf = p.portal_csrf if path.startswith("/portal/") else p.sub_csrf
    form: dict[str, Any] = {"csrf_token": csrf}
    headers = {"X-CSRF-Token": p.portal_csrf}
    who, secret = p.credentials
    if endpoint == "api.sightings":
        raw = json.dumps({"batch_id": uuid.uuid4().hex, "sent_at": time.time(), "sightings": []})
        return {"data": raw.encode(), "content_type": "application/json"}, raw.encode()
    if endpoint == "api.heartbeat":
        raw = json.dumps({"uptime_s": 1, "adapter": "up"}).encode()
        return {"data": raw, "content_type": "application/json"}, raw
    if endpoint in ("portal.login", "auditor.signin"):
        form |= {"email": who, "password": secret}
    elif endpoint in ("rights.signin", "optin.signin"):
        form |= {"username": who, "password": secret}
    elif endpoint == "rights.erase":
        form["confirm"] = "yes"
    elif endpoint == "rights.home_area":
        form["home_area"] = "75111"
    elif endpoint == "optin.verify":
        form["receipt"] = w.principals["sub"].jws
    elif endpoint == "optin.submit":
        page = p.client(w.app).get(path)
        nonce = NONCE.search(page.get_data(as_text=True)) if page.status_code == 200 else None
        form |= {
            "presence": "merchant",
            "share": "preferences",
            "statistics": "yes",
            "home_area": "75111",
            "duration": "withdrawn",
            "nonce": nonce.group(1) if nonce else "",
        }
    elif endpoint == "portal.skip":
        return {"json": {"zone": "chair-1", "track": "trk:1001"}, "headers": headers}, b""
    elif endpoint == "portal.veto":
        return {"json": {"track": "trk:authz-veto"}, "headers": headers}, b""
    elif endpoint == "portal.device_pair":
        return {"json": {"code": w.pairing_code()}, "headers": headers}, b""
    elif endpoint == "portal.save_rules":
        form |= {"volume_max": "80", "veto": ""}
    elif endpoint == "portal.upload_zones":
        form["zones_text"] = ZONES
    elif endpoint == "portal.upload_survey":
        form["survey"] = (io.BytesIO(w.survey_csv), "walk.csv")
        return {"data": form, "headers": headers, "content_type": "multipart/form-data"}, b""
    elif endpoint == "portal.place_scanner":
        form |= {"x": "2.0", "y": "1.5"}
    elif endpoint == "portal.invite":
        form |= {"password": "authz-new-password", "confirm": "authz-new-password"}
    elif endpoint == "portal.onboard":
        slug = f"onboarded-{secrets.token_hex(4)}"
        form |= {"slug": slug, "name": slug, "kind": "salon", "email": f"{slug}@example.test"}
    elif endpoint == "portal.set_status":
        form["status"] = "active"  # authorised or not, merchant A stays active for the others
    return {"data": form, "headers": headers}, b""


def fresh_device_principal(w: World, role: str) -> Principal:
    """For the device's token rotation: a paired device of its own, so the shared one keeps its
    token; other roles unchanged."""
    p = w.principals[role]
    if role != "device":
        return p
    _device_id, token = w.fresh_device(paired=True)
    return replace(p, credentials=(p.credentials[0], token), bearer=token)
