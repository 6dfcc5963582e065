"""The QR code on screen decodes, with a real decoder, to a link that opens the opt-in page; and
receipts verify with the public key alone, and fail when altered."""

from __future__ import annotations

import base64
import json

import pytest
import requests
import zxingcpp

from store_server import receipts
from store_server.optin.links import LinkError, make_link, qr_png, read_token
from tests.store_server.optin.helpers import (
    csrf,
    make_account,
    make_shop,
    new_client,
    opt_in,
    token_for,
)
from tests.store_server.optin.png import read_grey

pytestmark = pytest.mark.consent


def decode(png: bytes) -> list[str]:
    """Every QR code zxing-cpp finds in a PNG image."""
    return [r.text for r in zxingcpp.read_barcodes(read_grey(png))]


def test_qr_png_decodes_back_to_the_link_which_opens_the_page(app):
    shop = make_shop(app, "Salon QR")
    link = make_link("http://localhost", app.config["SECRET_KEY"], shop.merchant_id, shop.venue_id)
    [decoded] = decode(qr_png(link))
    assert decoded == link
    token = decoded.rsplit("/", 1)[1]
    assert read_token(app.config["SECRET_KEY"], token, 60).merchant_id == shop.merchant_id
    page = new_client(app).get(decoded.removeprefix("http://localhost"))
    assert page.status_code == 200 and "Salon QR" in page.text


def test_served_qr_image_decodes_to_its_own_link(app):
    shop = make_shop(app)
    token = token_for(app, shop)
    client = new_client(app)
    resp = client.get(f"/optin/{token}/qr.png")
    assert resp.status_code == 200 and resp.content_type == "image/png"
    assert decode(resp.data) == [f"http://localhost/optin/{token}"]
    svg = client.get(f"/optin/{token}/qr.svg")
    assert svg.status_code == 200 and svg.data.startswith(b"<?xml")
    assert client.get("/optin/tampered.token.here/qr.png").status_code == 400


def test_served_qr_encodes_the_public_address_phones_reach(app, live_server, monkeypatch):
    # The portal or a device fetches the image by an address of its own (a LAN or container
    # host); the phone that scans it must get the one configured for the public.
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", "https://mood.example.com")
    token = token_for(app, make_shop(app))
    resp = requests.get(f"{live_server.url}/optin/{token}/qr.png", timeout=10)
    assert resp.status_code == 200
    assert decode(resp.content) == [f"https://mood.example.com/optin/{token}"]


def test_tampered_token_is_invalid_not_expired(app):
    shop = make_shop(app)
    token = token_for(app, shop)
    payload = base64.urlsafe_b64encode(json.dumps({"m": 1, "v": 1}).encode()).rstrip(b"=")
    forged = payload.decode() + token[token.index(".") :]
    with pytest.raises(LinkError) as e:
        read_token(app.config["SECRET_KEY"], forged, 3600)
    assert e.value.kind == "invalid"


def _receipt(app):  # type: ignore[no-untyped-def]
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    assert opt_in(client, token_for(app, shop), user, pw).status_code == 200
    page = client.get("/me/")
    rid = page.text.split("/optin/receipts/")[1].split('"')[0]
    doc = client.get(f"/optin/receipts/{rid}.json").get_json()
    return client, doc


def test_receipt_verifies_with_the_public_key_and_fails_when_altered(app):
    _client, doc = _receipt(app)
    jwk = receipts.public_jwk(receipts.signing_key(app.config["DATA_KEY"]).public_key())
    key = receipts.key_from_jwk(jwk)
    assert receipts.verify(key, doc["jws"]) == doc["receipt"]
    header, body, sig = doc["jws"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["services"][0]["purposes"][1]["piiCategory"] = ["Everything"]
    altered = base64.urlsafe_b64encode(receipts.canonical(claims)).rstrip(b"=").decode()
    with pytest.raises(receipts.InvalidReceipt):
        receipts.verify(key, f"{header}.{altered}.{sig}")
    other = receipts.signing_key("another-deployment").public_key()
    with pytest.raises(receipts.InvalidReceipt):
        receipts.verify(other, doc["jws"])
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(receipts.InvalidReceipt):
        receipts.verify(key, f"{none_alg}.{body}.")


def test_receipt_has_every_kantara_field(app):
    _client, doc = _receipt(app)
    r = doc["receipt"]
    for field in receipts.REQUIRED:
        assert field in r
    assert isinstance(r["consentTimestamp"], int) and r["sensitive"] is False
    ctl = r["piiControllers"][0]
    assert {"piiController", "contact", "address", "email", "phone"} <= set(ctl)
    for p in r["services"][0]["purposes"]:
        assert {
            "purpose",
            "purposeCategory",
            "consentType",
            "piiCategory",
            "primaryPurpose",
            "termination",
            "thirdPartyDisclosure",
        } <= set(p)
        assert p["consentType"] == "EXPLICIT"


def test_verifier_page_says_valid_or_not(app):
    client, doc = _receipt(app)
    page = client.get("/optin/verify?lang=en")
    ok = client.post("/optin/verify", data={"csrf_token": csrf(page.text), "receipt": doc["jws"]})
    assert ok.status_code == 200 and "Valid: signed by this server" in ok.text
    assert "in force" in ok.text
    bad = client.post(
        "/optin/verify", data={"csrf_token": csrf(page.text), "receipt": doc["jws"][:-4] + "AAAA"}
    )
    assert "Not valid" in bad.text and "Valid: signed" not in bad.text
    assert client.post("/optin/verify", data={"receipt": doc["jws"]}).status_code == 400
