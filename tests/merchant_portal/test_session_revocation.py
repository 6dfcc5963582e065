"""Sign-ins are revocable server-side: a cookie copied before sign-out (staff, auditor, subscriber)
or before a password change is refused afterwards, another browser of the same person survives a
sign-out elsewhere, and without Redis a signed-in request gets a clear 503, never let through."""

from __future__ import annotations

import os
import queue
import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from merchant_portal.operator import invite_link
from store_server import services
from store_server.db import sessions, upgrade
from store_server.models import Merchant, StaffUser
from store_server.optin.web import cookie_name
from tests.conftest import fresh_database, make_config
from tests.faults.support import RedisServer
from tests.merchant_portal.conftest import csrf_of, login, signed_in_session
from tests.merchant_portal.test_live_socket import PortalWatcher
from tests.store_server.optin.helpers import make_account, new_client
from wsgi import build_app

pytestmark = pytest.mark.authz
PASSWORD = "revocation-pass-2026"


def _staff(app: Flask, role: str) -> str:
    """A new staff account of the salon (or of no merchant, for the auditor); returns its email."""
    email = f"{role}-{secrets.token_hex(4)}@revocation.test"
    with sessions(app)() as db:
        merchant = None
        if role != "auditor":
            merchant = db.scalar(select(Merchant).where(Merchant.slug == "salon-meche"))
        services.create_staff(db, email, PASSWORD, role, merchant)
        db.commit()
    return email


def _copy(app: Flask, source: FlaskClient, ip: str | None = None) -> FlaskClient:
    """Another browser holding a copy of every cookie `source` holds now (a stolen cookie)."""
    thief = new_client(app, ip)
    for name in ("session", cookie_name(app)):
        cookie = source.get_cookie(name)
        if cookie is not None:
            thief.set_cookie(name, cookie.value)
    return thief


def _auditor_signin(client: FlaskClient, email: str, password: str = PASSWORD) -> None:
    token = csrf_of(client.get("/auditor/signin").text)
    form = {"email": email, "password": password, "csrf_token": token}
    assert client.post("/auditor/signin", data=form).status_code == 303


def _subscriber_signin(client: FlaskClient, username: str, password: str) -> None:
    form = {"csrf_token": csrf_of(client.get("/me/signin").text), "username": username}
    assert client.post("/me/signin", data=form | {"password": password}).status_code == 303


def _sent_to_sign_in(resp: Any, page: str) -> bool:
    return resp.status_code in (302, 303) and page in resp.headers["Location"]


def test_staff_cookie_copied_before_sign_out_is_refused_after_it(portal_server, world, portal_app):
    email = _staff(portal_app, "staff")
    url = portal_server.url
    browser = signed_in_session(url, email, PASSWORD)
    stolen = {"session": browser.cookies["session"]}
    assert requests.get(f"{url}/portal/", cookies=stolen, timeout=10).status_code == 200
    page = browser.get(f"{url}/portal/", timeout=10).text
    browser.post(f"{url}/portal/logout", data={"csrf_token": csrf_of(page)}, timeout=10)

    again = requests.get(f"{url}/portal/", cookies=stolen, allow_redirects=False, timeout=10)
    assert _sent_to_sign_in(again, "/portal/login")
    json_api = f"{url}/portal/venues/{world.salon_venue}/present.json"
    polled = requests.get(json_api, cookies=stolen, allow_redirects=False, timeout=10)
    assert polled.status_code == 401 and polled.json()["error"]  # JSON: told, not redirected
    # Nor does the copy open the live view's Socket.IO connection.
    watcher = PortalWatcher(url, world.salon_venue, f"session={stolen['session']}")
    watcher.close()
    assert watcher.outcome == "refused"


def test_signing_out_ends_only_that_browser(portal_app, world):
    email = _staff(portal_app, "owner")
    tablet, phone = portal_app.test_client(), portal_app.test_client()
    assert login(tablet, email, PASSWORD).status_code == 302
    assert login(phone, email, PASSWORD).status_code == 302
    token = csrf_of(phone.get("/portal/").text)
    assert phone.post("/portal/logout", data={"csrf_token": token}).status_code == 302
    assert _sent_to_sign_in(phone.get("/portal/"), "/portal/login")
    assert tablet.get("/portal/").status_code == 200


def test_signing_in_again_ends_the_session_the_browser_held(portal_app, world):
    email = _staff(portal_app, "staff")
    browser = portal_app.test_client()
    assert login(browser, email, PASSWORD).status_code == 302
    before = _copy(portal_app, browser)
    assert login(browser, email, PASSWORD).status_code == 302
    assert browser.get("/portal/").status_code == 200
    assert _sent_to_sign_in(before.get("/portal/"), "/portal/login")


def test_auditor_cookie_copied_before_sign_out_is_refused_after_it(portal_app, world):
    email = _staff(portal_app, "auditor")
    browser = new_client(portal_app)
    _auditor_signin(browser, email)
    stolen = _copy(portal_app, browser)
    assert stolen.get("/auditor/").status_code == 200
    signout = browser.post(
        "/auditor/signout", data={"csrf_token": csrf_of(browser.get("/auditor/").text)}
    )
    assert signout.status_code == 303
    assert _sent_to_sign_in(stolen.get("/auditor/"), "/auditor/signin")


def test_subscriber_cookie_copied_before_sign_out_is_refused_after_it(portal_app, world):
    username, password = make_account(portal_app, "Revoked Reader")
    browser, other = new_client(portal_app), new_client(portal_app)
    _subscriber_signin(browser, username, password)
    _subscriber_signin(other, username, password)
    stolen = _copy(portal_app, browser)
    assert stolen.get("/me/").status_code == 200
    token = csrf_of(browser.get("/me/").text)
    assert browser.post("/me/signout", data={"csrf_token": token}).status_code == 303
    assert _sent_to_sign_in(stolen.get("/me/"), "/me/signin")
    assert _sent_to_sign_in(browser.get("/me/"), "/me/signin")
    # The same person's other browser was not signed out.
    assert other.get("/me/").status_code == 200


def test_a_password_change_ends_every_session_of_that_person(portal_app, world):
    email = _staff(portal_app, "auditor")
    desk, laptop = new_client(portal_app), new_client(portal_app)
    _auditor_signin(desk, email)
    _auditor_signin(laptop, email)
    assert login(laptop, email, PASSWORD).status_code == 302
    # Signed in to the portal, an auditor is refused (not sent to sign in): the session is live.
    assert laptop.get("/portal/").status_code == 403
    with sessions(portal_app)() as db:
        user = db.scalar(select(StaffUser).where(StaffUser.email == email))
        with portal_app.test_request_context():
            link = invite_link(user).split("://", 1)[1].split("/", 1)[1]
    changer = portal_app.test_client()
    new = "a-brand-new-password-2026"
    form = {"csrf_token": csrf_of(changer.get(f"/{link}").text), "password": new, "confirm": new}
    assert changer.post(f"/{link}", data=form).status_code == 302

    for browser in (desk, laptop):
        assert _sent_to_sign_in(browser.get("/auditor/"), "/auditor/signin")
    assert _sent_to_sign_in(laptop.get("/portal/"), "/portal/login")
    _auditor_signin(desk, email, new)
    assert desk.get("/auditor/").status_code == 200


def test_a_password_change_closes_the_live_connections_opened_before_it(
    portal_server, world, portal_app
):
    # A copy of the cookie already watching the venue live: the new password ends its session,
    # and must end what it is watching too, not only its next request.
    email = _staff(portal_app, "owner")
    url = portal_server.url
    thief = signed_in_session(url, email, PASSWORD)
    watcher = PortalWatcher(url, world.salon_venue, f"session={thief.cookies['session']}")
    assert watcher.outcome == "connected"
    gone: queue.Queue = queue.Queue()
    watcher.sio.on("disconnect", lambda *_a: gone.put(True), namespace="/portal")
    try:
        with sessions(portal_app)() as db:
            user = db.scalar(select(StaffUser).where(StaffUser.email == email))
            with portal_app.test_request_context():
                link = invite_link(user).split("://", 1)[1].split("/", 1)[1]
        owner = requests.Session()
        new = "a-brand-new-password-2026"
        page = owner.get(f"{url}/{link}", timeout=10).text
        form = {"csrf_token": csrf_of(page), "password": new, "confirm": new}
        assert owner.post(f"{url}/{link}", data=form, timeout=10).status_code == 200
        assert gone.get(timeout=10)
    finally:
        watcher.close()


@pytest.fixture
def own_redis_app(tmp_path: Path) -> Any:
    """The composed app on a redis-server of its own (which the test stops) and a fresh database."""
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    db_url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    app = build_app(make_config(tmp_path, db_url, server.url))
    with sessions(app)() as db:
        merchant = services.create_merchant(db, "down-salon", "Down Salon", "salon")
        services.create_staff(db, "owner@down.test", PASSWORD, "owner", merchant)
        services.create_staff(db, "auditor@down.test", PASSWORD, "auditor", None)
        db.commit()
    yield app, server
    server.kill()
    app.extensions["cm_engine"].dispose()
    drop()


def test_without_redis_a_signed_in_request_fails_closed_with_503(own_redis_app):
    app, server = own_redis_app
    owner, auditor = app.test_client(), new_client(app)
    assert login(owner, "owner@down.test", PASSWORD).status_code == 302
    assert owner.get("/portal/").status_code == 200
    _auditor_signin(auditor, "auditor@down.test")
    username, password = make_account(app, "Down Reader")
    subscriber = new_client(app)
    _subscriber_signin(subscriber, username, password)
    server.kill()

    page = owner.get("/portal/")
    assert page.status_code == 503 and page.headers["Retry-After"]
    assert "text/html" in page.content_type and ("retry" in page.text or "réessayez" in page.text)
    assert "Traceback" not in page.text
    api = owner.get("/portal/", headers={"Accept": "application/json"})
    assert api.status_code == 503 and api.headers["Retry-After"]
    assert "retry" in api.get_json()["error"] or "réessayez" in api.get_json()["error"]
    for client, path in ((auditor, "/auditor/"), (subscriber, "/me/")):
        resp = client.get(path)
        assert resp.status_code == 503, (path, resp.status_code)
        assert "retry" in resp.get_json()["error"]
    # Anonymous pages that need no sign-in still answer.
    assert app.test_client().get("/portal/login").status_code == 200
    # Back up, empty (a crashed Redis without persistence): those sessions ended, fail safe.
    server.start()
    assert _sent_to_sign_in(owner.get("/portal/"), "/portal/login")
    assert _sent_to_sign_in(auditor.get("/auditor/"), "/auditor/signin")
    assert _sent_to_sign_in(subscriber.get("/me/"), "/me/signin")
