"""Requests that once reached a 500 or an HTML page on the portal's JSON endpoints: each gets
its 4xx, as JSON, and changes nothing."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from store_server import receipts
from tests.merchant_portal.conftest import CAR_LOGIN, csrf_of, login
from tests.merchant_portal.test_devices import rules_form

pytestmark = pytest.mark.authz
DEEP = b"[" * 100_000 + b"]" * 100_000


def _skip(client, venue_id: int, body: bytes | dict):  # type: ignore[no-untyped-def]
    token = csrf_of(client.get("/portal/").get_data(as_text=True))
    headers = {"X-CSRF-Token": token}
    url = f"/portal/venues/{venue_id}/skip"
    if isinstance(body, dict):
        return client.post(url, json=body, headers=headers)
    return client.post(url, data=body, headers=headers, content_type="application/json")


@pytest.mark.parametrize(
    "body",
    [
        {"zone": [], "track": "trk:1"},
        {"zone": {}, "track": "trk:1"},
        {"zone": "chair-2", "track": "\u0661\u0662\u0663"},  # Arabic-Indic digits: not an id
        DEEP,
    ],
    ids=["zone-list", "zone-object", "unicode-track", "deep-nesting"],
)
def test_a_bad_skip_is_a_json_400(salon, world, body):
    resp = _skip(salon, world.salon_venue, body)
    assert resp.status_code == 400 and resp.is_json and resp.get_json()["error"]


def test_a_deeply_nested_pairing_request_is_a_json_400(client):
    resp = client.post("/portal/device/pair", data=DEEP, content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["error"]


# Ids are 32-bit INTEGER columns: on PostgreSQL 2**31 up to 2**63 - 1 (the old bound) failed the
# query ("integer out of range", a 500); on SQLite they are simply absent. Both must be 404.
@pytest.mark.parametrize("big", [2**31, 2**63 - 1, 10**30])
@pytest.mark.parametrize(
    "path",
    ["/portal/venues/{big}/skip", "/portal/devices/{big}/pair", "/me/consents/{big}/withdraw"],
)
def test_an_id_no_database_can_hold_is_a_404(salon, path, big):
    token = csrf_of(salon.get("/portal/").get_data(as_text=True))
    resp = salon.post(path.format(big=big), data={"csrf_token": token})
    assert resp.status_code == 404


@pytest.mark.parametrize("path", ["/portal/venues/{big}/live", "/portal/venues/{big}/present.json"])
def test_a_page_for_an_id_no_database_can_hold_is_a_404(salon, path):
    assert salon.get(path.format(big=2**31)).status_code == 404


def test_a_report_page_in_superscript_digits_is_a_404(salon):
    # "²".isdigit() is true and int("²") raises: that was a 500.
    for page in ("\u00b2", "\u0661", "1\u00b2"):
        assert salon.get("/portal/reports", query_string={"page": page}).status_code == 404


@pytest.mark.parametrize("email", ["\x00", "owner\x00@salon-meche.test"])
def test_a_sign_in_email_with_nul_is_a_400_page(client, email):
    # PostgreSQL text cannot hold NUL: the lookup failed in the driver (a 500 whose traceback
    # carried the e-mail tried). Refused before any view reads it, with the portal's error page.
    resp = login(client, email, "any-password")
    assert resp.status_code == 400 and "<html" in resp.get_data(as_text=True)


def test_a_poll_without_a_session_is_a_json_401(client, world):
    resp = client.get(f"/portal/venues/{world.salon_venue}/present.json")
    assert resp.status_code == 401 and resp.is_json and resp.get_json()["error"]


def test_a_rival_venues_poll_is_a_json_404(client, world):
    login(client, *CAR_LOGIN)
    resp = client.get(f"/portal/venues/{world.salon_venue}/present.json")
    assert resp.status_code == 404 and resp.is_json


def test_a_volume_in_superscript_digits_is_refused(salon, world):
    # "²".isdigit() is true and int("²") raises: that was a 500.
    resp = rules_form(salon, world, volume_max="\u00b2")
    assert resp.status_code == 400 and "a whole number from 0 to 100" in resp.get_data(as_text=True)


def test_a_receipt_nested_past_the_recursion_limit_is_invalid_not_a_crash():
    head = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    key = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(receipts.InvalidReceipt):
        receipts.verify(key, f"{head}.e30.c2ln")
