"""The opt-in and rights pages tried as an attacker would: forged, expired and replayed links,
cross-site posts, brute force, open redirects, forged sessions, hostile input; and the headers."""

from __future__ import annotations

import logging
import re
import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from store_server.models import Consent, Subscriber
from store_server.optin.links import make_token
from tests.store_server.optin.helpers import (
    CHOICES,
    NONCE,
    csrf,
    make_account,
    make_shop,
    new_client,
    opt_in,
    sign_in,
    token_for,
)

pytestmark = pytest.mark.consent


class _HourAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 2 * 3600


def test_expired_link_gets_a_clear_page(app):
    shop = make_shop(app)
    old = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="optin", signer=_HourAgo).dumps(
        {"m": shop.merchant_id, "v": shop.venue_id}
    )
    resp = new_client(app).get(f"/optin/{old}?lang=en")
    assert resp.status_code == 410
    assert "This code has expired" in resp.text and "text/html" in resp.content_type


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature altered
        lambda t: "eyJtIjoxLCJ2IjoxfQ" + t[t.index(".") :],  # payload swapped
        lambda t: t.split(".")[0],  # signature removed
        lambda _t: "x" * 500,  # absurd
    ],
)
def test_tampered_link_gets_a_clear_page(app, mutate):
    shop = make_shop(app)
    resp = new_client(app).get(f"/optin/{mutate(token_for(app, shop))}?lang=en")
    assert resp.status_code in (400, 404)
    assert "not valid" in resp.text or resp.status_code == 404


def test_link_signed_with_another_key_or_salt_is_refused(app):
    shop = make_shop(app)
    for token in (
        make_token("someone-else's-secret", shop.merchant_id, shop.venue_id),
        URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="portal").dumps(
            {"m": shop.merchant_id, "v": shop.venue_id}
        ),
        URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="optin").dumps(
            {"m": shop.merchant_id, "v": shop.venue_id, "admin": True}
        ),
        URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="optin").dumps(
            {"m": True, "v": shop.venue_id}
        ),
    ):
        assert new_client(app).get(f"/optin/{token}").status_code == 400


def test_venue_of_another_merchant_is_refused(app):
    a, b = make_shop(app), make_shop(app)
    token = make_token(app.config["SECRET_KEY"], a.merchant_id, b.venue_id)
    assert new_client(app).get(f"/optin/{token}").status_code == 404
    token = make_token(app.config["SECRET_KEY"], 10**9, a.venue_id)
    assert new_client(app).get(f"/optin/{token}").status_code == 404


def test_single_use_link_is_refused_once_used(app):
    shop = make_shop(app)
    user, pw = make_account(app)
    token = token_for(app, shop, single_use=True)
    client = new_client(app)
    assert opt_in(client, token, user, pw).status_code == 200
    again = new_client(app).get(f"/optin/{token}?lang=en")
    assert again.status_code == 410 and "already used" in again.text


def test_replayed_consent_form_is_refused_and_records_nothing(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    page = sign_in(client, token, user, pw)
    form = {**CHOICES, "csrf_token": csrf(page.text), "nonce": NONCE.search(page.text).group(1)}
    assert client.post(f"/optin/{token}/consent", data=form).status_code == 200
    replay = client.post(f"/optin/{token}/consent", data=form)
    assert replay.status_code == 409
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert len(db.scalars(select(Consent).where(Consent.subscriber_id == sub.id)).all()) == 1
    # A nonce forged without the server's key is refused too.
    forged = {**form, "nonce": "eyJuIjoiMDAifQ.forged.sig"}
    assert client.post(f"/optin/{token}/consent", data=forged).status_code == 400


def test_every_post_needs_the_csrf_token(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    client.get(f"/optin/{token}")
    # Sign-in without, or with someone else's token, or from another origin.
    for data, headers in (
        ({}, {}),
        ({"csrf_token": "guess"}, {}),
        (
            {"csrf_token": csrf(client.get(f"/optin/{token}").text)},
            {"Origin": "https://evil.example"},
        ),
    ):
        resp = client.post(
            f"/optin/{token}/signin",
            data={**data, "username": user, "password": pw},
            headers=headers,
        )
        assert resp.status_code == 400, resp.text
    assert opt_in(client, token, user, pw).status_code == 200
    for path in ("/me/withdraw-all", "/me/erase", "/me/home-area"):
        resp = client.post(path, data={"confirm": "yes", "home_area": "75101"})
        assert resp.status_code == 400, path
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert sub is not None and sub.home_area == "75111"
    assert db.scalar(select(Consent).where(Consent.subscriber_id == sub.id)).withdrawn_at is None


def test_an_unparsable_origin_is_refused_like_a_foreign_one(app, db):
    # urlsplit("http://[") raises ValueError ("Invalid IPv6 URL"): every subscriber and auditor
    # POST answered 500 to it. It names no host of ours, so it is refused as cross-origin.
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    assert opt_in(client, token, user, pw).status_code == 200
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    consent = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    form = {
        "csrf_token": csrf(client.get("/me/").text),
        **CHOICES,
        "username": user,
        "password": pw,
        "email": "nobody@example.test",
        "receipt": "x",
        "confirm": "yes",
        "home_area": "75101",
    }
    paths = [
        "/optin/verify",
        f"/optin/{token}/signin",
        f"/optin/{token}/consent",
        "/me/signin",
        f"/me/consents/{consent.id}/withdraw",
        "/me/withdraw-all",
        "/me/emitter/revoke",
        "/me/emitter/replace",
        "/me/home-area",
        "/me/erase",
        "/me/signout",
        "/auditor/signin",
        "/auditor/signout",
    ]
    for path in paths:
        answers = [
            client.post(path, data=form, headers={"Origin": origin}).status_code
            for origin in ("http://[", "https://evil.example")
        ]
        # Sign-outs redirect either way but leave the session alone; the rest are 400s.
        assert answers[0] == answers[1] == (303 if path.endswith("signout") else 400), path
    assert client.get("/me/").status_code == 200  # still signed in: no sign-out went through
    db.expire_all()
    assert db.get(Subscriber, sub.id).home_area == "75111"
    assert db.get(Consent, consent.id).withdrawn_at is None


def test_a_receipt_id_with_nul_is_a_404_that_logs_nobody(app, caplog):
    # PostgreSQL cannot compare text with NUL: the lookup failed, and the logged error carried
    # its bound values, among them the signed-in (never consented) person's directory id.
    user, pw = make_account(app)
    client = new_client(app)
    page = client.get("/me/signin")
    signin = {"csrf_token": csrf(page.text), "username": user, "password": pw}
    assert client.post("/me/signin", data=signin).status_code == 303
    with caplog.at_level(logging.INFO):
        for path in ("/optin/receipts/%00", "/optin/receipts/%00.json", "/optin/receipts/a%00b"):
            assert client.get(path).status_code == 404, path
    assert user not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_sign_in_is_rate_limited_per_account(app):
    shop = make_shop(app)
    user, pw = make_account(app)
    token = token_for(app, shop)
    statuses = []
    for i in range(7):
        client = new_client(app, ip=f"192.0.2.{i + 1}")  # a botnet: every try from a new address
        page = client.get(f"/optin/{token}")
        resp = client.post(
            f"/optin/{token}/signin",
            data={"csrf_token": csrf(page.text), "username": user, "password": f"wrong{i}"},
        )
        statuses.append(resp.status_code)
    assert statuses == [401] * 5 + [429] * 2
    # Even the right password is refused while the account is locked.
    client = new_client(app)
    page = client.get(f"/optin/{token}")
    resp = client.post(
        f"/optin/{token}/signin",
        data={"csrf_token": csrf(page.text), "username": user, "password": pw},
    )
    assert resp.status_code == 429


def test_sign_in_is_rate_limited_per_address(app):
    shop = make_shop(app)
    token = token_for(app, shop)
    client = new_client(app, ip="198.51.100.7")
    page = client.get(f"/optin/{token}")
    codes = []
    for i in range(22):
        resp = client.post(
            f"/optin/{token}/signin",
            data={"csrf_token": csrf(page.text), "username": f"nobody{i}", "password": "x" * 9},
        )
        codes.append(resp.status_code)
    assert codes[:20] == [401] * 20 and codes[20:] == [429, 429]


def test_opening_links_is_rate_limited_per_address(app):
    shop = make_shop(app)
    token = token_for(app, shop)
    client = new_client(app, ip="198.51.100.99")
    codes = [client.get(f"/optin/{token}").status_code for _ in range(62)]
    assert codes[:60] == [200] * 60 and codes[60:] == [429, 429]


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/me/%0d%0aLocation:%20https://evil.example",
        "https:evil.example",
        " //evil.example",
    ],
)
def test_no_open_redirect_after_sign_in(app, target):
    user, pw = make_account(app)
    client = new_client(app)
    page = client.get("/me/signin", query_string={"next": target})
    resp = client.post(
        "/me/signin",
        query_string={"next": target},
        data={"csrf_token": csrf(page.text), "username": user, "password": pw},
    )
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/me/"


def test_same_site_next_is_honoured(app):
    user, pw = make_account(app)
    client = new_client(app)
    page = client.get("/me/signin?next=/me/disclosures")
    resp = client.post(
        "/me/signin?next=/me/disclosures",
        data={"csrf_token": csrf(page.text), "username": user, "password": pw},
    )
    assert resp.headers["Location"] == "/me/disclosures"


def test_forged_or_foreign_session_cookie_is_anonymous(app):
    from store_server.optin.web import cookie_name
    from store_server.sessions import get_registry, subscriber_principal

    user, _pw = make_account(app)
    client = new_client(app)
    forged = URLSafeTimedSerializer("not-our-secret", salt="cm-subscriber-session").dumps(
        {"d": f"dir:{user}", "c": "x", "l": "en", "a": None}
    )
    client.set_cookie(cookie_name(app), forged, domain="localhost")
    assert client.get("/me/").status_code == 303
    client.set_cookie(cookie_name(app), "garbage", domain="localhost")
    assert client.get("/me/").status_code == 303
    # Signed with the app's key but naming no live server-side session: still anonymous.
    genuine = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="cm-subscriber-session")
    payload = {"d": f"dir:{user}", "c": "x", "l": "en", "a": None}
    client.set_cookie(cookie_name(app), genuine.dumps(payload), domain="localhost")
    assert client.get("/me/").status_code == 303
    # With a live session id it is accepted: the refusals above are the key's and the session's.
    sid = get_registry(app).start(subscriber_principal(f"dir:{user}"), 60)
    payload |= {"s": sid, "t": int(time.time())}
    client.set_cookie(cookie_name(app), genuine.dumps(payload), domain="localhost")
    assert client.get("/me/").status_code == 200


def test_strict_headers_and_secure_cookie_on_every_page(app):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    resp = client.get(f"/optin/{token}")
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("__Host-cm_sub=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    opt_in(client, token, user, pw)
    for path in (
        f"/optin/{token}",
        "/optin/verify",
        "/me/",
        "/me/disclosures",
        "/me/signin",
        "/auditor/signin",
        "/optin/not-a-token",
    ):
        r = client.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src" not in csp and "unsafe" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "<script" not in r.text.lower()


def test_choices_are_validated_with_clear_messages(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    page = sign_in(client, token, user, pw)
    nonce = NONCE.search(page.text).group(1)
    resp = client.post(
        f"/optin/{token}/consent?lang=en",
        data={"csrf_token": csrf(page.text), "nonce": nonce, "presence": "everywhere-and-more"},
    )
    assert resp.status_code == 400
    for msg in (
        "Choose where you may be detected.",
        "Choose what the device may receive.",
        "Answer the question about statistics.",
        "Choose a duration.",
    ):
        assert msg in resp.text
    bad_area = {
        **CHOICES,
        "home_area": "<script>alert(1)</script>",
        "csrf_token": csrf(resp.text),
        "nonce": NONCE.search(resp.text).group(1),
    }
    resp = client.post(f"/optin/{token}/consent?lang=en", data=bad_area)
    assert resp.status_code == 400 and "Choose your area from the list" in resp.text
    assert "<script>alert" not in resp.text
    assert db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}")) is None


def test_area_without_statistics_is_not_kept(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    resp = opt_in(new_client(app), token_for(app, shop), user, pw, statistics="no")
    assert resp.status_code == 200
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert sub.home_area is None


def test_passwords_are_hashed_with_a_modern_kdf(app):
    from store_server.directory import get_directory

    user, _pw = make_account(app)
    _account, pw_hash = get_directory(app)._accounts[user]
    assert re.match(r"^scrypt:\d+:\d+:\d+\$", pw_hash)


def test_consent_submissions_are_rate_limited_per_address(app):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app, ip="203.0.113.50")
    token = token_for(app, shop)
    page = sign_in(client, token, user, pw)
    form = {"csrf_token": csrf(page.text), "nonce": NONCE.search(page.text).group(1)}
    codes = [client.post(f"/optin/{token}/consent", data=form).status_code for _ in range(12)]
    assert codes[:10] == [400] * 10 and codes[10:] == [429, 429]


def test_sign_in_rotates_the_csrf_token_and_hides_which_part_was_wrong(app):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    before = csrf(client.get(f"/optin/{token}?lang=en").text)
    wrong_user = client.post(
        f"/optin/{token}/signin",
        data={"csrf_token": before, "username": "no-such-user", "password": pw},
    )
    wrong_pw = client.post(
        f"/optin/{token}/signin",
        data={"csrf_token": before, "username": user, "password": "not-the-password"},
    )
    assert wrong_user.status_code == wrong_pw.status_code == 401
    assert (
        "Wrong username or password." in wrong_user.text
        and "Wrong username or password." in wrong_pw.text
    )
    page = sign_in(client, token, user, pw)
    after = csrf(page.text)
    assert after != before
    # The pre-sign-in token (which a fixation attacker could know) no longer authorises anything.
    resp = client.post("/me/withdraw-all", data={"csrf_token": before})
    assert resp.status_code == 400


def test_https_pages_carry_hsts(app):
    resp = new_client(app).get("/optin/verify", base_url="https://localhost")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
