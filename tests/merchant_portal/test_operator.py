"""The programme operator's console: onboarding with a one-time invitation, suspension that cuts
a merchant's devices off, counts without identities, and roles kept apart."""

from __future__ import annotations

import queue
import re

import pytest
import requests
from shapely.geometry import box

from store_server import services
from store_server.db import sessions
from tests.merchant_portal.conftest import OPERATOR_LOGIN, SALON_LOGIN, csrf_of, login
from tests.merchant_portal.test_devices import CODE, device_outcome
from tests.merchant_portal.test_live_socket import PortalWatcher, signed_in_cookie

pytestmark = pytest.mark.authz
LINK = re.compile(r'<code id="invite-link">https?://[^/]+(/portal/invite/[^<]+)</code>')


@pytest.fixture
def ops(client, world):  # type: ignore[no-untyped-def]
    """A test client signed in as the operator."""
    resp = login(client, *OPERATOR_LOGIN)
    assert resp.headers["Location"].endswith("/portal/operator")
    return client


def onboard(client, **fields):  # type: ignore[no-untyped-def]
    """Submit the onboarding form."""
    token = csrf_of(client.get("/portal/operator").get_data(as_text=True))
    return client.post("/portal/operator/merchants", data={"csrf_token": token, **fields})


def test_console_lists_merchants_in_counts_only(ops, world):
    page = ops.get("/portal/operator").get_data(as_text=True)
    assert 'data-merchant="salon-meche"' in page and 'data-merchant="vtc-leon"' in page
    assert "Counts only" in page
    for public_id in world.demo.subscribers.values():
        assert public_id not in page
    assert "alice" not in page.lower() and "Alice" not in page


def test_onboarding_invites_the_owner_once(ops, portal_app):
    resp = onboard(
        ops, name="Ciné Lux", slug="cine-lux", kind="cinema", email="owner@cine-lux.test"
    )
    assert resp.status_code == 200
    link = LINK.search(resp.get_data(as_text=True)).group(1)
    ops.post("/portal/logout", data={"csrf_token": csrf_of(ops.get("/portal/operator").text)})

    invite = ops.get(link)
    assert invite.status_code == 200 and "owner@cine-lux.test" in invite.text
    token = csrf_of(invite.text)
    short = ops.post(link, data={"csrf_token": token, "password": "short", "confirm": "short"})
    assert short.status_code == 400 and "at least 12 characters" in short.text
    good = {"csrf_token": token, "password": "a-long-enough-pass", "confirm": "a-long-enough-pass"}
    assert ops.post(link, data=good).status_code == 302
    assert ops.get(link).status_code == 404  # spent

    assert login(ops, "owner@cine-lux.test", "a-long-enough-pass").status_code == 302
    page = ops.get("/portal/").get_data(as_text=True)
    assert "Salon" not in page and "Berline" not in page


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"slug": "Bad Slug!"}, "The short id must be"),
        ({"kind": "casino"}, "Choose a kind of business"),
        ({"email": "not-an-email"}, "does not look like an email"),
        ({"slug": "salon-meche"}, "already in use"),
        # NUL cannot be stored in PostgreSQL text (the insert was a 500): the form is refused.
        ({"name": "\x00"}, "The form has expired or is invalid"),
        ({"email": "x\x00@x-shop.test"}, "The form has expired or is invalid"),
    ],
)
def test_onboarding_refuses_bad_input(ops, fields, message):
    base = {"name": "X", "slug": "x-shop", "kind": "shop", "email": "x@x-shop.test"}
    resp = onboard(ops, **{**base, **fields})
    assert resp.status_code == 400 and message in resp.get_data(as_text=True)
    assert 'data-merchant="x-shop"' not in ops.get("/portal/operator").get_data(as_text=True)


def test_suspending_cuts_devices_off_and_reactivating_lets_them_back(
    ops, portal_app, portal_server
):
    with sessions(portal_app)() as db:
        m = services.create_merchant(db, "shop-suspend", "Boutique Suspendue", "shop")
        v = services.create_venue(db, m, "Boutique", "site")
        z = services.add_zone(db, v, "caisse", "area", box(0, 0, 3, 3))
        speaker = services.add_device(db, v, z, "shop-speaker")
        token = services.issue_device_token(speaker)
        spare = services.add_device(db, v, z, "shop-spare")
        services.create_staff(db, "owner@shop-suspend.test", "shop-owner-pass", "owner", m)
        db.commit()
        merchant_id, venue_id, spare_id = m.id, v.id, spare.id
    assert device_outcome(portal_server.url, token) == "connected"
    shop = ops.application.test_client()
    login(shop, "owner@shop-suspend.test", "shop-owner-pass")
    csrf = csrf_of(shop.get("/portal/").get_data(as_text=True))
    shown = shop.post(f"/portal/devices/{spare_id}/pair", data={"csrf_token": csrf})
    code = CODE.search(shown.get_data(as_text=True)).group(1)

    def set_status(status: str):  # type: ignore[no-untyped-def]
        csrf = csrf_of(ops.get("/portal/operator").get_data(as_text=True))
        return ops.post(
            f"/portal/operator/merchants/{merchant_id}/status",
            data={"csrf_token": csrf, "status": status},
        )

    cookie = signed_in_cookie(portal_server.url, "owner@shop-suspend.test", "shop-owner-pass")
    live = PortalWatcher(portal_server.url, venue_id, cookie)
    assert live.outcome == "connected"
    cut: queue.Queue = queue.Queue()
    live.sio.on("disconnect", lambda *_a: cut.put(True), namespace="/portal")
    try:
        assert set_status("suspended").status_code == 302
        # The live view the owner opened before is closed with the suspension.
        assert cut.get(timeout=10)
    finally:
        live.close()
    assert "Boutique Suspendue is suspended" in ops.get("/portal/operator").text
    assert device_outcome(portal_server.url, token) == "refused"
    # Nor does a code shown before the suspension connect another device.
    pair = f"{portal_server.url}/portal/device/pair"
    assert requests.post(pair, json={"code": code}, timeout=10).status_code == 404
    resp = shop.get("/portal/")
    assert resp.status_code == 403 and "affiliation is suspended" in resp.get_data(as_text=True)
    polled = shop.get(f"/portal/venues/{venue_id}/present.json")  # the live page's poll
    assert polled.status_code == 403 and polled.is_json and polled.get_json()["error"]
    watcher = PortalWatcher(portal_server.url, venue_id, cookie)
    watcher.close()
    assert watcher.outcome == "refused"
    assert set_status("active").status_code == 302
    assert device_outcome(portal_server.url, token) == "connected"
    assert shop.get("/portal/").status_code == 200
    watcher = PortalWatcher(portal_server.url, venue_id, cookie)
    watcher.close()
    assert watcher.outcome == "connected"
    assert set_status("closed").status_code == 400


def test_roles_stay_apart(client, ops, world):
    assert ops.get(f"/portal/venues/{world.salon_venue}/live").status_code == 403
    other = ops.application.test_client()
    login(other, *SALON_LOGIN)
    assert other.get("/portal/operator").status_code == 403
    token = csrf_of(other.get("/portal/").get_data(as_text=True))
    resp = other.post(
        "/portal/operator/merchants",
        data={"csrf_token": token, "name": "N", "slug": "nn", "kind": "shop", "email": "a@b.cd"},
    )
    assert resp.status_code == 403
