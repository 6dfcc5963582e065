"""The portal in a real headless Chromium against the live server: sign-in, live presence driven
by signed sighting batches, the device page's pairing, pushes and revokes, and tenant isolation.
Each screen is saved as a tablet-size PNG under artifacts/screenshots/."""

from __future__ import annotations

import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from store_server import services
from store_server.crypto import pseudonym
from store_server.db import sessions
from store_server.models import Merchant
from store_server.sessions import end_all_sessions, staff_principal
from tests.merchant_portal.conftest import (
    CAR_LOGIN,
    OPERATOR_LOGIN,
    SALON_LOGIN,
    browser_login,
    make_present,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
SALON = "Salon Mèche Rebelle — Oberkampf"
# The sweeper ends a presence 4 s after the last sighting; allow for the batch's 4 s of rows.
EXIT_WAIT_MS = 20_000


def alice_pseudonym(world) -> str:
    """Alice as the salon sees her."""
    return pseudonym(world.demo.merchant_keys[SALON], world.demo.subscribers["alice"])


def test_sign_in_shows_own_venues(context):
    page = context.new_page()
    page.goto("/portal/login?lang=en")
    expect(page.get_by_label("Email")).to_be_focused()  # ready to type at once
    screenshot(page, "01-login")
    page.get_by_label("Email").fill(SALON_LOGIN[0])
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Email or password is incorrect.")
    page.get_by_label("Password").fill(SALON_LOGIN[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")
    expect(page.get_by_role("heading", name=SALON)).to_be_visible()
    expect(page.get_by_text("Berline")).to_have_count(0)
    screenshot(page, "02-venues")
    # Keyboard first: the skip link comes first and lands on the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_pairing_then_live_view_and_device_follow_a_subscriber(context, portal_server, world):
    """One presence cycle drives both screens: the owner's live view and the paired device."""
    owner = context.new_page()
    browser_login(owner, *SALON_LOGIN)
    owner.goto(f"/portal/venues/{world.salon_venue}/devices")
    # The owner's rules shape the blended queue: no explicit tracks, one veto, a volume cap.
    owner.get_by_label("Allow explicit tracks").uncheck()
    owner.get_by_label("Volume cap").fill("70")
    owner.get_by_label("Vetoed tracks").fill("trk:1002")
    owner.get_by_role("button", name="Save").click()
    expect(owner.get_by_role("status").first).to_have_text("Playback rules saved.")
    owner.get_by_role("button", name="Pair — demo-chair-1-speaker").click()
    code = owner.locator("#pair-code").inner_text()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    screenshot(owner, "05-devices-pairing")

    device_ctx = context.browser.new_context(
        viewport={"width": 1024, "height": 768}, base_url=portal_server.url
    )
    try:
        device = device_ctx.new_page()
        device.goto("/portal/device?lang=en")
        device.get_by_label("Pairing code").fill("WRONG-CODE")
        device.get_by_role("button", name="Pair").click()
        expect(device.locator("#pair-error")).to_be_visible()
        device.get_by_label("Pairing code").fill(code.lower())
        device.get_by_role("button", name="Pair").click()
        expect(device.locator("#device-status")).to_have_attribute("data-state", "connected")
        expect(device.locator("#device-waiting")).to_be_visible()
        # The code worked once: it cannot pair a second device.
        assert device.request.post("/portal/device/pair", data={"code": code}).status == 404

        live = owner
        live.goto(f"/portal/venues/{world.salon_venue}/live")
        expect(live.locator("#live-status")).to_have_attribute("data-state", "connected")
        expect(live.locator("#live-empty")).to_be_visible()
        screenshot(live, "03-live-empty")

        make_present(portal_server, world, "alice", "demo-salon-scanner-1")
        row = live.locator(f'#present-rows tr[data-subscriber="{alice_pseudonym(world)}"]')
        expect(row).to_be_visible()
        expect(row.locator(".zone")).to_have_text("chair-1")
        expect(live.locator("#live-empty")).to_be_hidden()
        expect(live.locator("#live-count")).to_have_text("1 present")
        # Dwell ticks on the page without any reload.
        expect(row.locator(".dwell")).to_have_text(re.compile(r"^\d+:\d\d$"))
        screenshot(live, "04-live-present")

        card = device.locator(f'.push[data-subscriber="{alice_pseudonym(world)}"]')
        expect(card).to_be_visible()
        expect(card.locator(".scope")).to_have_text("Playlist — Sunday Morning")
        expect(card.locator(".tracks li")).to_have_count(3)
        expect(device.locator("#device-waiting")).to_be_hidden()
        # The push carries what alice shares; the queue is what the salon may play of it.
        queue = device.locator("#queue li")
        expect(queue).to_have_count(1)
        expect(queue.first).to_have_attribute("data-track", "trk:1001")
        expect(queue.first).to_contain_text(f"for {alice_pseudonym(world)}")
        expect(device.locator("#queue-volume")).to_have_text("Volume capped at 70 %")
        screenshot(device, "06-device-push")

        # The live page shows what the chair plays, and a veto there reaches the device at once.
        playing = live.locator('#queues .zone-queue[data-zone="chair-1"] li')
        expect(playing).to_have_count(1)
        expect(playing.first).to_have_attribute("data-track", "trk:1001")
        screenshot(live, "04b-live-playing")
        playing.first.get_by_role("button", name="Veto").click()
        expect(playing).to_have_count(0)
        expect(queue).to_have_count(0)
        expect(live.locator("#queues-empty")).to_be_visible()

        # Nobody is heard any more: the exit reaches both screens without a reload.
        expect(row).to_have_count(0, timeout=EXIT_WAIT_MS)
        expect(live.locator("#live-empty")).to_be_visible()
        expect(live.locator("#live-count")).to_have_text("0 present")
        expect(card).to_have_count(0, timeout=EXIT_WAIT_MS)
        expect(device.locator("#device-waiting")).to_be_visible()
        expect(device.locator("#queue-panel")).to_be_hidden()
        # Put the rules back as other tests expect them (the veto above persisted).
        owner.goto(f"/portal/venues/{world.salon_venue}/devices")
        owner.get_by_label("Vetoed tracks").fill("trk:1002")
        owner.get_by_role("button", name="Save").click()
        expect(owner.get_by_role("status").first).to_have_text("Playback rules saved.")
    finally:
        device_ctx.close()


def test_revoking_a_device_in_the_portal_stops_it_at_once(context, portal_server, world):
    owner = context.new_page()
    browser_login(owner, *SALON_LOGIN)
    owner.goto(f"/portal/venues/{world.annex_venue}/devices")
    owner.get_by_role("button", name="Pair — annex-speaker").click()
    code = owner.locator("#pair-code").inner_text()
    device = context.browser.new_page(base_url=portal_server.url)
    try:
        device.goto("/portal/device?lang=en")
        device.get_by_label("Pairing code").fill(code)
        device.get_by_role("button", name="Pair").click()
        expect(device.locator("#device-status")).to_have_attribute("data-state", "connected")

        owner.get_by_role("button", name="Revoke — annex-speaker").click()
        expect(owner.get_by_role("status").first).to_contain_text("annex-speaker is revoked")
        expect(owner.locator('tr[data-device="annex-speaker"] .device-status')).to_have_text(
            "Revoked"
        )
        # The device was disconnected, its token refused: it is back to the pairing form.
        expect(device.locator("#device-revoked")).to_be_visible()
        expect(device.locator("#pair-panel")).to_be_visible()
        assert device.evaluate("localStorage.getItem('cm-device-token')") is None
    finally:
        device.close()


def test_tenant_isolation_in_the_browser(context, world):
    page = context.new_page()
    browser_login(page, *CAR_LOGIN)
    expect(page.get_by_role("heading", name="Berline AB-123-CD")).to_be_visible()
    expect(page.get_by_text("Salon")).to_have_count(0)
    resp = page.goto(f"/portal/venues/{world.salon_venue}/live")
    assert resp.status == 404
    expect(page.get_by_text("This page does not exist or is not yours.")).to_be_visible()
    assert page.request.get(f"/portal/venues/{world.salon_venue}/present.json").status == 404


def test_other_screens_render_at_tablet_size(context, world):
    page = context.new_page()
    browser_login(page, *SALON_LOGIN)
    page.goto(f"/portal/venues/{world.salon_venue}/qr")
    qr = page.locator(".qr-code svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box["width"] >= 400, "the QR must be readable across a counter"
    link = page.locator(".qr-code").get_attribute("data-link")
    assert link.startswith(context.pages[0].url.split("/portal")[0] + "/optin/")
    screenshot(page, "07-optin-qr")

    page.goto(f"/portal/venues/{world.salon_venue}/setup")
    expect(page.locator("svg.plan g.zone")).to_have_count(2)
    expect(page.locator("svg.plan g.scanner")).to_have_count(2)
    screenshot(page, "08-setup")

    page.goto(f"/portal/venues/{world.salon_venue}/devices")
    expect(page.locator('tr[data-scanner="demo-salon-scanner-1"] .warning')).to_be_visible()
    screenshot(page, "09-devices-scanners")

    page.goto("/portal/reports?lang=fr")
    expect(page.get_by_role("heading", name="Rapports", exact=True)).to_be_visible()
    screenshot(page, "10-reports-fr")


def test_reports_page_shows_the_map_in_the_browser(context, stored_report):
    page = context.new_page()
    browser_login(page, *SALON_LOGIN)
    page.goto("/portal/reports?lang=en")
    areas = {a for cell in stored_report["catchment"]["cells"] for a in cell["areas"]}
    expect(page.locator("svg.map path.area")).to_have_count(len(areas))
    box = page.locator("svg.map").bounding_box()
    assert box["width"] > 300 and box["height"] > 150
    screenshot(page, "12-reports-map")


def test_signing_out_elsewhere_leaves_a_clear_state_on_the_live_page(context, world):
    live = context.new_page()
    browser_login(live, *SALON_LOGIN)
    live.goto(f"/portal/venues/{world.salon_venue}/live")
    status = live.locator("#live-status")
    expect(status).to_have_attribute("data-state", "connected")
    other = context.new_page()
    other.goto("/portal/")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url("**/portal/login")
    # Closed by the server, then refused on the retry: the page says so instead of going stale.
    expect(status).to_have_attribute("data-state", "refused")
    expect(status).to_contain_text("sign in again")
    screenshot(live, "11-live-signed-out")


@pytest.mark.parametrize("size", [(1024, 768), (768, 1024)])
def test_screens_fit_tablets_without_sideways_scrolling(browser, portal_server, world, size):
    ctx = browser.new_context(
        viewport={"width": size[0], "height": size[1]}, base_url=portal_server.url
    )
    try:
        page = ctx.new_page()
        browser_login(page, *SALON_LOGIN)
        v = world.salon_venue
        for path in (
            "/portal/",
            f"/portal/venues/{v}/live",
            f"/portal/venues/{v}/devices",
            f"/portal/venues/{v}/setup",
            f"/portal/venues/{v}/qr",
            "/portal/device",
        ):
            page.goto(path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {size}"
    finally:
        ctx.close()


def test_device_page_accepts_a_rotated_token_handed_over_in_the_link(context, world):
    owner = context.new_page()
    browser_login(owner, *SALON_LOGIN)
    owner.goto(f"/portal/venues/{world.salon_venue}/devices")
    owner.get_by_role("button", name="Rotate token — demo-chair-2-speaker").click()
    token = owner.locator("#device-token").inner_text()
    device = context.new_page()
    device.goto(f"/portal/device?lang=en#token={token}")
    expect(device.locator("#device-status")).to_have_attribute("data-state", "connected")
    assert "token" not in device.url
    assert device.evaluate("localStorage.getItem('cm-device-token')") == token


def test_operator_console_renders(context, world):
    page = context.new_page()
    page.goto("/portal/login?lang=en")
    page.get_by_label("Email").fill(OPERATOR_LOGIN[0])
    page.get_by_label("Password").fill(OPERATOR_LOGIN[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/operator")
    expect(page.locator('tr[data-merchant="salon-meche"]')).to_be_visible()
    expect(page.get_by_label("Owner's email")).to_be_visible()
    screenshot(page, "13-operator")


def test_a_page_of_another_origin_cannot_watch_the_venue_live(context, portal_server, world):
    """Cross-site websocket hijacking: the staff cookie is SameSite=Lax, and a page of the same
    site but another origin (here another port of 127.0.0.1; in production a sibling subdomain)
    opening a websocket to the portal sends it. Its connection must be refused."""
    page = context.new_page()
    browser_login(page, *SALON_LOGIN)
    html = f"""<!doctype html><title>elsewhere</title>
<script src="{portal_server.url}/portal/static/vendor/socket.io.min.js"></script>
<script>
  var s = io("{portal_server.url}/portal", {{
    auth: {{venue: {world.salon_venue}}}, transports: ["websocket"], reconnection: false
  }});
  s.on("connect", function () {{ document.title = "connected"; }});
  s.on("connect_error", function () {{ document.title = "refused"; }});
</script>""".encode()

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *_args: object) -> None:
            pass

    # A real server on another port: Chromium lets a loopback page reach the loopback server.
    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{elsewhere.server_port}/watch.html")
        expect(page).to_have_title(re.compile("^(connected|refused)$"))
        assert page.title() == "refused"
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()


def test_language_switch_after_a_form_lands_on_the_page_not_a_405(context, world):
    page = context.new_page()
    browser_login(page, *SALON_LOGIN)
    page.goto(f"/portal/venues/{world.annex_venue}/devices?lang=en")
    page.get_by_role("button", name="Pair — annex-spare").click()
    expect(page.locator("#pair-code")).to_be_visible()
    # The page is now at .../devices/<id>/pair, a URL that takes only the form's POST.
    with page.expect_navigation() as nav:
        page.locator("nav.langs a[lang=fr]").click()
    assert nav.value.status == 200
    assert page.url.endswith(f"/portal/venues/{world.annex_venue}/devices?lang=fr")
    assert page.locator("html").get_attribute("lang") == "fr"
    expect(page.locator('tr[data-device="annex-spare"]')).to_be_visible()


def test_the_qr_on_screen_is_replaced_before_its_link_expires(
    context, world, portal_app, monkeypatch
):
    # A deployment that keeps opt-in links short: 20 s here, to watch it happen.
    monkeypatch.setitem(portal_app.config, "OPTIN_LINK_MAX_AGE_S", 20)
    page = context.new_page()
    browser_login(page, *SALON_LOGIN)
    page.goto(f"/portal/venues/{world.salon_venue}/qr")
    shown = page.locator(".qr-code").get_attribute("data-link")
    # Left on this screen, the tablet shows a new code while the old one still opens the page,
    # with most of its lifetime left for whoever scanned it last.
    with page.expect_navigation(timeout=10_000):
        pass
    assert page.locator(".qr-code").get_attribute("data-link") != shown
    assert page.request.get(shown).status == 200


def test_a_form_sent_after_the_session_ended_leads_back_to_its_page(context, world, portal_app):
    email = f"owner-{secrets.token_hex(4)}@demo.collective-mood.test"
    password = "second-owner-2026"
    with sessions(portal_app)() as db:
        salon = db.scalar(select(Merchant).where(Merchant.slug == "salon-meche"))
        owner = services.create_staff(db, email, password, "owner", salon)
        db.commit()
        owner_id = owner.id
    page = context.new_page()
    browser_login(page, email, password)
    page.goto(f"/portal/venues/{world.annex_venue}/devices?lang=en")
    # Her session ends while the page is open (a new password set elsewhere does this).
    end_all_sessions(portal_app, staff_principal(owner_id))
    page.get_by_role("button", name="Pair — annex-spare").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Sign in").click()
    # Back on the page the form was on, not a 405 for a POST that cannot be replayed.
    assert nav.value.status == 200
    assert page.url.endswith(f"/portal/venues/{world.annex_venue}/devices?lang=en")
    expect(page.locator("#pair-code")).to_have_count(0)
