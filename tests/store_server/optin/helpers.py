"""Test data for the opt-in tests: a merchant and venue, directory accounts, signed-in clients."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from flask import Flask
from flask.testing import FlaskClient

from store_server import services
from store_server.db import sessions
from store_server.directory import get_directory
from store_server.optin.links import make_token

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NONCE = re.compile(r'name="nonce" value="([^"]+)"')
CHOICES = {
    "presence": "merchant",
    "share": "playlist",
    "statistics": "yes",
    "home_area": "75111",
    "duration": "withdrawn",
}


@dataclass
class Shop:
    """A merchant with one venue and one zone device."""

    merchant_id: int
    venue_id: int
    name: str


def make_shop(app: Flask, name: str | None = None) -> Shop:
    """A fresh merchant with a site and a chair zone with a device."""
    from shapely.geometry import box

    slug = f"optin-{secrets.token_hex(4)}"
    with sessions(app)() as db:
        m = services.create_merchant(db, slug, name or f"Salon {slug}", "salon")
        v = services.create_venue(db, m, f"{m.name} site", "site")
        z = services.add_zone(db, v, "chair-1", "chair", box(0, 0, 2, 2))
        services.add_device(db, v, z, f"{slug}-speaker")
        db.commit()
        return Shop(m.id, v.id, m.name)


def make_account(app: Flask, display_name: str = "Test Person") -> tuple[str, str]:
    """A new directory account; returns (username, password)."""
    username = f"user{secrets.token_hex(5)}"
    password = secrets.token_urlsafe(12)
    get_directory(app).add(username, password, display_name)
    return username, password


def new_client(app: Flask, ip: str | None = None) -> FlaskClient:
    """A test client from its own address (rate limits are per address)."""
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = (
        ip or f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    )
    return c


def csrf(html: str) -> str:
    """The CSRF token in a page."""
    m = CSRF.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def token_for(app: Flask, shop: Shop, *, single_use: bool = False) -> str:
    """A signed opt-in token for the shop, as the portal's QR carries."""
    return make_token(
        app.config["SECRET_KEY"], shop.merchant_id, shop.venue_id, single_use=single_use
    )


def sign_in(client: FlaskClient, token: str, username: str, password: str):  # type: ignore[no-untyped-def]
    """Open the link and sign in; returns the choices page response."""
    page = client.get(f"/optin/{token}")
    if page.status_code == 303:  # already signed in: straight to the choices
        return client.get(page.headers["Location"])
    assert page.status_code == 200, page.text
    resp = client.post(
        f"/optin/{token}/signin",
        data={"csrf_token": csrf(page.text), "username": username, "password": password},
    )
    assert resp.status_code == 303, resp.text
    return client.get(resp.headers["Location"])


def opt_in(client: FlaskClient, token: str, username: str, password: str, **choices: str):  # type: ignore[no-untyped-def]
    """The whole journey through HTTP; returns the final page response."""
    page = sign_in(client, token, username, password)
    assert page.status_code == 200, page.text
    form = {**CHOICES, **choices}
    form = {k: v for k, v in form.items() if v is not None}
    form["csrf_token"] = csrf(page.text)
    form["nonce"] = NONCE.search(page.text).group(1)
    return client.post(f"/optin/{token}/consent", data=form)


@dataclass
class LiveShop:
    """A shop wired for the live path: a scanner in the chair and a paired device."""

    shop: Shop
    scanner: str
    secret: str
    device_id: int
    device_token: str


def make_live_shop(app: Flask) -> LiveShop:
    """A venue with one chair, a scanner at its centre and a paired playback device."""
    from shapely.geometry import box

    slug = f"live-{secrets.token_hex(4)}"
    with sessions(app)() as db:
        m = services.create_merchant(db, slug, f"Salon {slug}", "salon")
        v = services.create_venue(db, m, f"{m.name} site", "site")
        z = services.add_zone(
            db, v, "chair-1", "chair", box(0, 0, 2, 2), enter_stable_s=1.0, exit_absent_s=60.0
        )
        s, secret = services.add_scanner(db, app.config["DATA_KEY"], v, f"{slug}-scan", 1.0, 1.0)
        d = services.add_device(db, v, z, f"{slug}-speaker")
        token = services.issue_device_token(d)
        db.commit()
        return LiveShop(Shop(m.id, v.id, m.name), s.name, secret, d.id, token)


class Device:
    """A real python-socketio client on the device namespace that records and acks events."""

    def __init__(self, url: str, token: str, ack: bool = True) -> None:
        import queue

        import socketio

        self.events: queue.Queue = queue.Queue()
        self._ack = ack
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("event", self._on_event, namespace="/device")
        self.sio.connect(url, namespaces=["/device"], auth={"token": token}, wait_timeout=10)

    def _on_event(self, data: dict) -> None:
        import time

        data["_received"] = time.monotonic()
        self.events.put(data)
        if self._ack:
            self.sio.emit("ack", {"event_id": data["event_id"]}, namespace="/device")

    def next(self, timeout: float = 10.0) -> dict:
        """The next event, waiting for it to arrive."""
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        """Disconnect."""
        self.sio.disconnect()


def sighted(url: str, live: LiveShop, identity_key: bytes, exponent: int, base: int) -> None:
    """What the scanner sends when the subscriber sits in the chair: one signed batch."""
    import json
    import time
    import uuid

    import requests

    from beacons.eid import compute_eid
    from beacons.signing import signed_headers

    now = time.time()
    rows = [
        {
            "ts": now + d,
            "kind": "eid",
            "id": compute_eid(identity_key, exponent, int(now + d) - base).hex(),
            "rssi": -50,
            "tx_power": -20,
        }
        for d in (0, 1, 2, 3)
    ]
    body = json.dumps({"batch_id": uuid.uuid4().hex, "sent_at": now, "sightings": rows}).encode()
    resp = requests.post(
        f"{url}/api/v1/sightings",
        data=body,
        headers=signed_headers(live.scanner, live.secret, body),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


def provisioning_doc(html_text: str):  # type: ignore[no-untyped-def]
    """The emitter provisioning document shown on the done page."""
    import html

    from beacons import provisioning

    raw = html_text.split('id="provisioning-json">')[1].split("</pre>")[0]
    return provisioning.parse(html.unescape(raw))
