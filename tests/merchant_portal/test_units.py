"""Small pure pieces of the portal: pairing codes, the opt-in link, the QR, the catalogue."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from merchant_portal.i18n import CATALOGUE, translate
from merchant_portal.pairing import ALPHABET, LENGTH, PairingCodes, grouped, normalise
from merchant_portal.qr import optin_link, qr_svg
from merchant_portal.throttle import Throttle
from store_server.redis_store import get_keys, get_redis


def test_pairing_codes_are_single_use_and_expire(portal_app):
    codes = PairingCodes(lambda: get_redis(portal_app), get_keys(portal_app), "k", ttl_s=600)
    code = codes.issue(7, now=1000.0)
    assert len(code) == LENGTH and set(code) <= set(ALPHABET)
    assert codes.redeem(grouped(code).lower(), now=1001.0) == 7
    assert codes.redeem(code, now=1002.0) is None
    late = codes.issue(8, now=1000.0)
    assert codes.redeem(late, now=1600.0) is None


def test_a_new_code_cancels_the_previous_one_of_that_device(portal_app):
    codes = PairingCodes(lambda: get_redis(portal_app), get_keys(portal_app), "k")
    first, second = codes.issue(3), codes.issue(3)
    other = codes.issue(4)
    assert codes.redeem(first) is None
    assert codes.redeem(second) == 3 and codes.redeem(other) == 4
    assert normalise(" ab2c-d3ef ") == "AB2CD3EF"


def test_optin_link_is_signed_for_the_venue_and_expires():
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", PUBLIC_BASE_URL="https://shop.example/")
    link = optin_link(app, 12, 34)
    m = re.fullmatch(r"https://shop\.example/optin/([A-Za-z0-9_.\-]+)", link)
    assert m, link
    s = URLSafeTimedSerializer("k", salt="optin")
    assert s.loads(m.group(1), max_age=60) == {"m": 12, "v": 34}
    with pytest.raises(SignatureExpired):
        s.loads(m.group(1), max_age=-1)
    with pytest.raises(BadSignature):
        URLSafeTimedSerializer("k", salt="other").loads(m.group(1))
    with pytest.raises(BadSignature):
        s.loads(m.group(1)[:-2] + "xx")


def test_qr_is_scalable_inline_svg():
    svg = str(qr_svg("https://shop.example/optin/abc"))
    assert svg.startswith("<svg") and 'viewBox="0 0 ' in svg
    assert "width=" not in svg.split(">", 1)[0]  # sized by CSS, not fixed


def test_both_languages_have_every_string_with_the_same_placeholders():
    en, fr = CATALOGUE["en"], CATALOGUE["fr"]
    assert set(en) == set(fr)
    for key in en:
        assert set(re.findall(r"{(\w+)}", en[key])) == set(re.findall(r"{(\w+)}", fr[key])), key
    assert translate("fr", "live_count", n=3) == "3 présent(s)"
    assert translate("de", "sign_in") == "Sign in"


def test_throttle_counts_failures_in_a_sliding_window(portal_app):
    th = Throttle(lambda: get_redis(portal_app), get_keys(portal_app), "k", "unit", 2, 10)
    th.fail("a", now=0.0)
    assert not th.blocked("a", now=1.0)
    th.fail("a", now=1.0)
    assert th.blocked("a", now=2.0) and not th.blocked("b", now=2.0)
    assert not th.blocked("a", now=10.5)  # the first failure aged out
    th.fail("a", now=11.0)
    th.clear("a")
    assert not th.blocked("a", now=11.0)
