"""The whole journey in a real browser (Playwright + Debian chromium, phone-sized): scan the
portal's QR, sign in, choose scopes, get the receipt and the emitter key, appear on a merchant
device, withdraw, and see the device receive the revoke."""

from __future__ import annotations

import time

import pytest
import requests
import zxingcpp
from sqlalchemy import select

from beacons import provisioning
from store_server.models import Consent, Subscriber
from tests.store_server.optin.helpers import (
    Device,
    make_account,
    make_live_shop,
    provisioning_doc,
    sighted,
    token_for,
)
from tests.store_server.optin.png import read_grey

pytestmark = [pytest.mark.consent, pytest.mark.browser]


def decode(png: bytes) -> list[str]:
    """Every QR code a real decoder finds in a PNG."""
    return [r.text for r in zxingcpp.read_barcodes(read_grey(png))]


def test_scan_sign_in_choose_receipt_present_withdraw(app, live_server, db, browser):
    live = make_live_shop(app)
    user, pw = make_account(app, "Browser Person")
    token = token_for(app, live.shop)
    # What the portal shows: the QR image, decoded as a phone camera would.
    qr = requests.get(f"{live_server.url}/optin/{token}/qr.png", timeout=10)
    [scanned] = decode(qr.content)
    assert scanned == f"{live_server.url}/optin/{token}"
    device = Device(live_server.url, live.device_token)
    violations: list[str] = []
    try:
        context = browser.new_context(
            locale="fr-FR", viewport={"width": 390, "height": 844}, is_mobile=True
        )
        page = context.new_page()
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security" in m.text else None,
        )
        resp = page.goto(scanned)
        assert resp.status == 200
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        assert page.locator("h1").inner_text() == "Connectez-vous avec votre compte de streaming"
        page.click("#lang-switch")
        assert page.locator("h1").inner_text() == "Sign in with your streaming account"
        page.fill("#username", user)
        page.fill("#password", pw)
        page.click("#signin")
        page.wait_for_selector("#consent-form")
        assert page.locator("input:checked").count() == 0, "nothing may be pre-ticked"
        assert not page.is_visible("#home_area"), "area asked only with statistics"
        page.check("#presence-merchant")
        page.check("#share-playlist")
        page.check("#statistics-yes")
        assert page.is_visible("#home_area")
        page.select_option("#home_area", "75111")
        page.check("#duration-withdrawn")
        page.click("#agree")
        page.wait_for_selector("#done")
        receipt_id = page.locator("#receipt-id").inner_text()
        assert "Send your playlist" in page.locator("#purposes").inner_text()

        # The emitter app scans the provisioning QR off the screen.
        [doc_text] = decode(page.locator("#provisioning-qr").screenshot())
        doc = provisioning.parse(doc_text)
        sighted(live_server.url, live, doc.identity_key, doc.exponent, doc.time_base)
        push = device.next()
        assert push["type"] == "push" and push["scope"] == "playlist"

        page.click("#receipt-link")
        assert page.locator("#status").inner_text() == "in force"
        page.goto(f"{live_server.url}/me/")
        assert page.locator(f"#consents >> text={live.shop.name}").count() == 1
        started = time.monotonic()
        page.click("#withdraw-all")
        revoke = device.next(timeout=5)
        assert revoke["type"] == "revoke" and revoke["subscriber"] == push["subscriber"]
        assert revoke["_received"] - started < 1.0
        page.wait_for_selector("#notice")
        assert page.locator(".consent .status").first.inner_text() == "withdrawn"
        context.close()
    finally:
        device.close()
    assert violations == []
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    c = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    assert c.receipt_id == receipt_id and c.withdrawn_at is not None


def test_language_switch_works_on_pages_a_form_rendered(app, live_server, browser):
    shop = make_live_shop(app).shop
    user, pw = make_account(app, "Polyglot Person")
    context = browser.new_context(locale="fr-FR", viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/optin/{token_for(app, shop)}")
        page.fill("#username", user)
        page.fill("#password", "not her password")
        page.click("#signin")
        assert page.locator(".error").count() == 1  # the refusal, in French, at .../signin
        # That page's own URL takes only the form's POST: the switch must not land on a 405.
        with page.expect_navigation() as nav:
            page.click("#lang-switch")
        assert nav.value.status == 200
        assert page.locator("h1").inner_text() == "Sign in with your streaming account"
        page.fill("#username", user)
        page.fill("#password", pw)
        page.click("#signin")
        page.wait_for_selector("#consent-form")
        assert page.locator("html").get_attribute("lang") == "en"
        # A page's other arguments survive the switch: after sign-in she still lands on `next`.
        page.goto(f"{live_server.url}/me/signin?next=/me/disclosures")
        page.click("#lang-switch")
        assert "next=%2Fme%2Fdisclosures" in page.url and "lang=fr" in page.url
    finally:
        context.close()


def opt_in_for_preferences(page, url: str, user: str, pw: str) -> None:  # type: ignore[no-untyped-def]
    """Through the opt-in page at `url`: her preferences at this merchant, no statistics,
    until withdrawn; returns on the confirmation."""
    page.goto(url)
    page.fill("#username", user)
    page.fill("#password", pw)
    page.click("#signin")
    for choice in ("#presence-merchant", "#share-preferences", "#statistics-no"):
        page.check(choice)
    page.check("#duration-withdrawn")
    page.click("#agree")
    page.wait_for_selector("#done")


def test_disclosure_history_says_why_in_the_page_language(app, live_server, browser):
    live = make_live_shop(app)
    user, pw = make_account(app)
    device = Device(live_server.url, live.device_token)
    context = browser.new_context(locale="fr-FR", viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        opt_in_for_preferences(
            page, f"{live_server.url}/optin/{token_for(app, live.shop)}", user, pw
        )
        doc = provisioning_doc(page.content())
        sighted(live_server.url, live, doc.identity_key, doc.exponent, doc.time_base)
        assert device.next()["type"] == "push"
        page.goto(f"{live_server.url}/me/")
        page.click("#withdraw-all")
        page.wait_for_selector("#notice")
        page.goto(f"{live_server.url}/me/disclosures")
        stopped = page.locator("#history tr.revoke").inner_text()
        assert "vous avez retiré votre accord" in stopped and "withdrawn" not in stopped
        assert "préférences" in page.locator("#history tr.push").inner_text()
    finally:
        context.close()
        device.close()


def test_a_withdrawal_sent_after_the_session_ended_leads_back_to_it(app, live_server, browser):
    live = make_live_shop(app)
    user, pw = make_account(app)
    context = browser.new_context(locale="en-GB", viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        opt_in_for_preferences(
            page, f"{live_server.url}/optin/{token_for(app, live.shop)}", user, pw
        )
        page.goto(f"{live_server.url}/me/")
        # Her session ends while the dashboard is open (signed out in another tab here; an
        # idle timeout does the same), then she taps "withdraw everything".
        other = context.new_page()
        other.goto(f"{live_server.url}/me/")
        other.click("form[action='/me/signout'] button")
        page.click("#withdraw-all")
        page.fill("#username", user)
        page.fill("#password", pw)
        with page.expect_navigation() as nav:
            page.click("#signin")
        # Her space, not a 405 for the form that cannot be replayed; nothing was withdrawn
        # behind her back, and one tap now does it.
        assert nav.value.status == 200 and page.url.endswith("/me/")
        assert page.locator(".consent .status").first.inner_text() == "in force"
        page.click("#withdraw-all")
        page.wait_for_selector("#notice")
        assert page.locator(".consent .status").first.inner_text() == "withdrawn"
    finally:
        context.close()
