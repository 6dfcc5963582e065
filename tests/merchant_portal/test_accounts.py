"""Sign-in, sessions, CSRF and tenancy over real HTTP requests to the composed app."""

from __future__ import annotations

import pytest
from werkzeug.security import generate_password_hash

from store_server import services
from store_server.db import sessions, upgrade
from store_server.models import StaffUser
from store_server.redis_store import get_keys, get_redis
from tests.conftest import composed_app, drop_keys, make_config
from tests.merchant_portal.conftest import (
    CAR_LOGIN,
    SALON_LOGIN,
    SALON_STAFF_LOGIN,
    csrf_of,
    login,
)
from wsgi import build_app

pytestmark = pytest.mark.authz


def test_sign_in_sets_a_hardened_session_and_lists_only_own_venues(client, world):
    resp = login(client, *SALON_LOGIN)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/portal/")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/portal/").get_data(as_text=True)
    assert "Oberkampf" in page and "Annexe" in page
    assert "Berline" not in page


def test_bad_credentials_get_one_generic_answer(client, world):
    wrong_pw = login(client, SALON_LOGIN[0], "not-the-password")
    unknown = login(client, "nobody@example.test", "whatever-password")
    assert wrong_pw.status_code == unknown.status_code == 401
    msg = "Email or password is incorrect."
    assert msg in wrong_pw.get_data(as_text=True) and msg in unknown.get_data(as_text=True)
    assert client.get("/portal/").status_code == 302  # still anonymous


def test_forms_without_the_csrf_token_are_refused(client, world):
    resp = client.post("/portal/login", data={"email": SALON_LOGIN[0], "password": SALON_LOGIN[1]})
    assert resp.status_code == 400
    assert login(client, *SALON_LOGIN).status_code == 302
    assert client.post("/portal/logout").status_code == 400
    assert client.get("/portal/").status_code == 200  # the forged logout did nothing


def test_anonymous_visitors_are_sent_to_sign_in_and_back(client, world):
    resp = client.get(f"/portal/venues/{world.salon_venue}/live")
    assert resp.status_code == 302 and "/portal/login?next=" in resp.headers["Location"]
    token = csrf_of(client.get(resp.headers["Location"]).get_data(as_text=True))
    resp = client.post(
        "/portal/login",
        data={
            "email": SALON_LOGIN[0],
            "password": SALON_LOGIN[1],
            "csrf_token": token,
            "next": f"/portal/venues/{world.salon_venue}/live",
        },
    )
    assert resp.headers["Location"].endswith(f"/portal/venues/{world.salon_venue}/live")


def test_sign_in_never_redirects_off_site(client, world):
    token = csrf_of(client.get("/portal/login").get_data(as_text=True))
    resp = client.post(
        "/portal/login",
        data={
            "email": SALON_LOGIN[0],
            "password": SALON_LOGIN[1],
            "csrf_token": token,
            "next": "//evil.example/portal/",
        },
    )
    assert resp.headers["Location"].endswith("/portal/")
    assert "evil" not in resp.headers["Location"]


def test_logout_ends_the_session(client, world):
    login(client, *SALON_LOGIN)
    token = csrf_of(client.get("/portal/").get_data(as_text=True))
    assert client.post("/portal/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/portal/").status_code == 302


def test_merchant_a_gets_404_for_everything_of_merchant_b(salon, world):
    car = world.car_venue
    for url in (
        f"/portal/venues/{car}/live",
        f"/portal/venues/{car}/present.json",
        f"/portal/venues/{car}/qr",
        f"/portal/venues/{car}/devices",
        f"/portal/venues/{car}/setup",
        "/portal/venues/999999/live",
    ):
        assert salon.get(url).status_code == 404, url
    token = csrf_of(salon.get("/portal/").get_data(as_text=True))
    car_device = world.devices["demo-car-tablet"]
    car_scanner = world.scanners["demo-car-scanner"]
    for url, data in (
        (f"/portal/devices/{car_device}/pair", {}),
        (f"/portal/devices/{car_device}/rotate", {}),
        (f"/portal/devices/{car_device}/revoke", {}),
        (f"/portal/scanners/{car_scanner}/place", {"x": "1", "y": "1"}),
        (f"/portal/venues/{car}/zones", {"zones_text": "{}"}),
    ):
        assert salon.post(url, data={"csrf_token": token, **data}).status_code == 404, url
    # ... while the salon's own pages answer.
    assert salon.get(f"/portal/venues/{world.salon_venue}/live").status_code == 200


def test_and_merchant_b_cannot_see_merchant_a_either(client, world):
    login(client, *CAR_LOGIN)
    assert client.get(f"/portal/venues/{world.car_venue}/live").status_code == 200
    assert client.get(f"/portal/venues/{world.salon_venue}/devices").status_code == 404


def test_staff_who_are_not_owners_can_watch_but_not_change_devices(client, world):
    login(client, *SALON_STAFF_LOGIN)
    assert client.get(f"/portal/venues/{world.salon_venue}/live").status_code == 200
    page = client.get(f"/portal/venues/{world.annex_venue}/devices").get_data(as_text=True)
    assert "Only the owner" in page
    token = csrf_of(page)
    device = world.devices["annex-spare"]
    assert (
        client.post(f"/portal/devices/{device}/revoke", data={"csrf_token": token}).status_code
        == 403
    )


def test_language_from_query_then_remembered_or_from_accept_language(client, world):
    page = client.get("/portal/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert "Se connecter" in page.get_data(as_text=True)
    assert 'lang="fr"' in page.get_data(as_text=True)
    assert "Sign in" in client.get("/portal/login?lang=en").get_data(as_text=True)
    # The explicit choice sticks across pages, whatever the browser says.
    page = client.get("/portal/login", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert "Sign in" in page


def test_password_guessing_is_throttled_per_account(client, world):
    email = "guess-target@demo.collective-mood.test"
    codes = [login(client, email, f"guess-{i}").status_code for i in range(11)]
    assert codes == [401] * 10 + [429]
    assert "Too many failed attempts" in login(client, email, "again").get_data(as_text=True)
    # Other accounts are unaffected.
    assert login(client, *SALON_LOGIN).status_code == 302


def test_password_guessing_across_accounts_is_throttled_per_address(tmp_path):
    # One password tried on every account met no limit: each account's own count stayed low.
    with composed_app(tmp_path, PORTAL_LOGIN_IP_FAILURES=3) as app:
        with sessions(app)() as db:
            merchant = services.create_merchant(db, "spray", "Spray salon", "salon")
            services.create_staff(db, "real@spray.test", "the-real-pass-2026", "owner", merchant)
            db.commit()
        guesser, office = app.test_client(), app.test_client()
        guesser.environ_base["REMOTE_ADDR"] = "192.0.2.77"
        office.environ_base["REMOTE_ADDR"] = "192.0.2.78"
        codes = [login(guesser, f"user{i}@spray.test", "Summer2026").status_code for i in range(3)]
        assert codes == [401] * 3
        # Refused from that address now, even for an account with no failure of its own.
        assert login(guesser, "real@spray.test", "the-real-pass-2026").status_code == 429
        assert login(office, "real@spray.test", "the-real-pass-2026").status_code == 302


def test_outside_tests_the_session_cookie_is_https_only_and_host_bound(tmp_path):
    url = f"sqlite:///{tmp_path / 'secure.db'}"
    upgrade(url)
    config = {**make_config(tmp_path, url, None), "TESTING": False}
    config.pop("PORTAL_COOKIE_SECURE", None)
    app = build_app(config)
    try:
        c = app.test_client()
        resp = c.get("/portal/login", base_url="https://portal.test")
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("__Host-cm_portal=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie
        assert "Domain" not in cookie
    finally:
        r = get_redis(app)
        drop_keys(r, get_keys(app).pattern())
        app.extensions["cm_engine"].dispose()
        # Stop the embedded Redis now rather than in an exit hook after logging has closed.
        getattr(r, "_cleanup", lambda: None)()


def test_a_password_change_ends_existing_sessions(client, world, portal_app):
    login(client, *SALON_STAFF_LOGIN)
    assert client.get("/portal/").status_code == 200
    with sessions(portal_app)() as db:
        user = db.query(StaffUser).filter_by(email=SALON_STAFF_LOGIN[0]).one()
        old_hash = user.password_hash
        user.password_hash = generate_password_hash(SALON_STAFF_LOGIN[1])  # same password, new salt
        db.commit()
    try:
        assert client.get("/portal/").status_code == 302
        assert login(client, *SALON_STAFF_LOGIN).status_code == 302
        assert client.get("/portal/").status_code == 200
    finally:
        with sessions(portal_app)() as db:
            db.query(StaffUser).filter_by(email=SALON_STAFF_LOGIN[0]).one().password_hash = old_hash
            db.commit()
