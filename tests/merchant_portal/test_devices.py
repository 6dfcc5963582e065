"""Devices and scanners: pairing codes, token rotation and revocation checked against the real
/device namespace, and scanner health from signed heartbeats."""

from __future__ import annotations

import json
import queue
import re
import time
import uuid

import pytest
import requests
import socketio
from sqlalchemy import select

from beacons.signing import signed_headers
from merchant_portal.health import scanner_status
from store_server import jobs, outbox, services
from store_server.db import sessions
from store_server.drift_report import venue_drift
from store_server.models import Merchant
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.helpers import eid_rows, post_batch
from tests.merchant_portal.conftest import csrf_of, hang_up

pytestmark = pytest.mark.authz
TOKEN = re.compile(r'<code id="device-token">([^<]+)</code>')
CODE = re.compile(r'<p class="code" id="pair-code">([A-Z0-9-]+)</p>')


def device_outcome(url: str, token: str) -> str:
    """Whether the store server's /device namespace lets this token in."""
    outcome: queue.Queue = queue.Queue()
    sio = socketio.Client(reconnection=False)
    sio.on("connect", lambda: outcome.put("connected"), namespace="/device")
    sio.on("connect_error", lambda *_a: outcome.put("refused"), namespace="/device")
    sio.connect(
        url, namespaces=["/device"], auth={"token": token}, transports=["polling"], wait=False
    )
    try:
        return outcome.get(timeout=10)
    finally:
        hang_up(sio)


def post_action(client, device_id: int, action: str):  # type: ignore[no-untyped-def]
    """Press a device's action button on the devices page."""
    token = csrf_of(client.get("/portal/").get_data(as_text=True))
    return client.post(f"/portal/devices/{device_id}/{action}", data={"csrf_token": token})


def test_rotating_a_token_shows_it_once_and_kills_the_old_one(salon, world, portal_server):
    device = world.devices["annex-spare"]
    first = post_action(salon, device, "rotate")
    assert first.status_code == 200
    old = TOKEN.search(first.get_data(as_text=True)).group(1)
    assert device_outcome(portal_server.url, old) == "connected"
    new = TOKEN.search(post_action(salon, device, "rotate").get_data(as_text=True)).group(1)
    assert new != old
    assert device_outcome(portal_server.url, old) == "refused"
    assert device_outcome(portal_server.url, new) == "connected"
    # Shown once: the devices page itself never repeats it.
    page = salon.get(f"/portal/venues/{world.annex_venue}/devices").get_data(as_text=True)
    assert new not in page


def test_a_pairing_code_works_once_and_yields_a_working_token(salon, world, portal_server):
    device = world.devices["annex-spare"]
    code = CODE.search(post_action(salon, device, "pair").get_data(as_text=True)).group(1)
    pair = f"{portal_server.url}/portal/device/pair"
    assert requests.post(pair, json={"code": "ABCD-EFGH"}, timeout=10).status_code == 404
    assert requests.post(pair, json={"code": 12345678}, timeout=10).status_code == 400
    # People type codes in lower case and without the dash: both are accepted.
    resp = requests.post(pair, json={"code": code.replace("-", "").lower()}, timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["device"] == "annex-spare"
    assert device_outcome(portal_server.url, body["token"]) == "connected"
    assert requests.post(pair, json={"code": code}, timeout=10).status_code == 404


def test_revoking_refuses_the_token(salon, world, portal_server, client):
    device = world.devices["annex-spare"]
    token = TOKEN.search(post_action(salon, device, "rotate").get_data(as_text=True)).group(1)
    code = CODE.search(post_action(salon, device, "pair").get_data(as_text=True)).group(1)
    resp = post_action(salon, device, "revoke")
    assert resp.status_code == 302
    page = salon.get(resp.headers["Location"]).get_data(as_text=True)
    assert "annex-spare is revoked" in page
    assert device_outcome(portal_server.url, token) == "refused"
    # A code shown before the revoke is void: it would have paired the device again.
    pair = f"{portal_server.url}/portal/device/pair"
    assert requests.post(pair, json={"code": code}, timeout=10).status_code == 404
    # Pairing again brings it back.
    again = TOKEN.search(post_action(salon, device, "rotate").get_data(as_text=True)).group(1)
    assert device_outcome(portal_server.url, again) == "connected"


@pytest.mark.parametrize("how", ["rotate", "pair"])
def test_a_device_paired_again_gets_nothing_queued_for_it_while_revoked(
    salon, world, portal_server, portal_app, how
):
    device = world.devices["annex-spare"]
    assert post_action(salon, device, "revoke").status_code == 302
    # A worker whose cached topology still lists the device pushes to it after the revoke.
    r, keys = get_redis(portal_app), get_keys(portal_app)
    stale = {"type": "push", "zone": "annex", "subscriber": "pseudonym", "expires_at": None}
    outbox.append_many(r, keys, [(device, stale)], maxlen=100, ttl_s=3600)
    assert len(outbox.pending(r, keys, device, time.time())) == 1
    if how == "rotate":
        page = post_action(salon, device, "rotate").get_data(as_text=True)
        token = TOKEN.search(page).group(1)
    else:
        code = CODE.search(post_action(salon, device, "pair").get_data(as_text=True)).group(1)
        pair = f"{portal_server.url}/portal/device/pair"
        token = requests.post(pair, json={"code": code}, timeout=10).json()["token"]
    assert device_outcome(portal_server.url, token) == "connected"
    assert outbox.pending(r, keys, device, time.time()) == []


def test_scanner_health_from_a_signed_heartbeat(salon, world, portal_server):
    body = json.dumps(
        {
            "uptime_s": 3600,
            "queue_depth": 7,
            "frames_heard": 1200,
            "frames_dropped": 345,
            "adapter": "up",
        }
    ).encode()
    resp = requests.post(
        f"{portal_server.url}/api/v1/heartbeat",
        data=body,
        headers=signed_headers("annex-scanner", world.annex_scanner_secret, body),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    page = salon.get(f"/portal/venues/{world.annex_venue}/devices").get_data(as_text=True)
    row = re.search(r'<tr data-scanner="annex-scanner" class="([^"]*)">(.*?)</tr>', page, re.S)
    assert row, page
    assert row.group(1) == ""  # no warning
    cells = re.sub(r"\s+", " ", row.group(2))
    assert re.search(r"[0-5] s ago", cells)
    assert "<td>7</td>" in cells and "1200 / 345" in cells and "up" in cells
    # The salon's own scanners never sent one: they are flagged.
    salon_page = salon.get(f"/portal/venues/{world.salon_venue}/devices").get_data(as_text=True)
    assert salon_page.count("Never heard from") == 2


@pytest.fixture
def drift_venue(portal_app):  # type: ignore[no-untyped-def]
    """A salon venue of its own (two scanners, no zone, no device: nobody is pushed to) and a
    visitor consented to the salon from now on."""
    key = portal_app.config["DATA_KEY"]
    with sessions(portal_app)() as db:
        salon = db.query(Merchant).filter_by(slug="salon-meche").one()
        venue = services.create_venue(db, salon, f"Drift {uuid.uuid4().hex[:6]}", "site")
        secrets = {
            name: services.add_scanner(db, key, venue, name, x, 1.5)[1]
            for name, x in ((f"drift-a-{venue.id}", 1.5), (f"drift-b-{venue.id}", 6.0))
        }
        visitor = services.create_subscriber(db, f"test:{uuid.uuid4().hex}", "Drift", [], {})
        k, emitter = services.provision_emitter(db, key, visitor)
        services.grant_consent(db, visitor, salon, "preferences", False, None)
        db.commit()
        venue_id, exponent, base = venue.id, k.exponent, k.time_base
    get_topology(portal_app).invalidate()
    jobs.refresh_resolver(portal_app)
    return venue_id, secrets, (emitter, exponent, base)


def test_scanner_drift_learnt_by_live_tracking_is_shown(
    salon, portal_server, portal_app, drift_venue
):
    """A scanner that reads louder than the radio map says shows a positive drift, learnt by the
    tracker of a consented visitor that real signed batches placed in the venue."""
    venue, secrets, emitter = drift_venue
    a, b = sorted(secrets)
    page = salon.get(f"/portal/venues/{venue}/devices").get_data(as_text=True)
    assert page.count("not learnt yet") == 2
    # Stamped from now on, within the clock skew a scanner is allowed: the consent starts now.
    start = time.time() + 1
    rows = {name: eid_rows(emitter, start, rssi, seconds=40) for name, rssi in ((a, -52), (b, -62))}
    for second in range(40):  # each scanner's batch of that second, as the daemons send them
        for name, mine in rows.items():
            resp = post_batch(portal_server.url, name, secrets[name], mine[second : second + 1])
            assert resp.status_code == 200, resp.text
    learnt = venue_drift(portal_app, venue)
    assert set(learnt) == {a, b}
    assert learnt[b][0] > learnt[a][0] + 2.0
    assert all(n == 1 for _, n in learnt.values())
    page = salon.get(f"/portal/venues/{venue}/devices").get_data(as_text=True)
    for name, (db, _) in learnt.items():
        row = re.search(rf'<tr data-scanner="{name}" class="[^"]*">(.*?)</tr>', page, re.S)
        assert row, page
        cell = re.search(r'<td class="drift">(.*?)</td>', row.group(1), re.S).group(1)
        assert cell.startswith(f"{db:+.1f} dB, from 1 visitor(s)"), cell
        assert "warning" not in cell  # one visitor is not a drift to act on


def test_scanner_status_flags_silence_and_a_down_adapter():
    hb = {"at": "1000.0", "queue_depth": "3", "frames_heard": "9", "frames_dropped": "1"}
    assert scanner_status(hb, 1060.0) == {
        "age_s": 60,
        "silent": False,
        "queue_depth": "3",
        "frames_heard": "9",
        "frames_dropped": "1",
        "adapter": "—",
        "adapter_down": False,
    }
    assert scanner_status(hb, 1061.0)["silent"] is True
    assert scanner_status({}, 1061.0) == {**scanner_status({}, 0), "age_s": None, "silent": True}
    assert scanner_status({**hb, "adapter": "down"}, 1001.0)["adapter_down"] is True
    assert scanner_status({"at": "garbage"}, 1.0)["age_s"] is None
    # The jobs' stand-in after Redis lost the reports is not a heartbeat heard.
    assert scanner_status({"at": "1000.0", "restored": "1"}, 1001.0)["age_s"] is None


def rules_form(client, world, **fields):  # type: ignore[no-untyped-def]
    """Submit the playback rules form of the annex's devices page."""
    page = client.get(f"/portal/venues/{world.annex_venue}/devices").get_data(as_text=True)
    return client.post(
        f"/portal/venues/{world.annex_venue}/rules", data={"csrf_token": csrf_of(page), **fields}
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"volume_max": "101"}, "a whole number from 0 to 100"),
        ({"volume_max": "-3"}, "a whole number from 0 to 100"),
        ({"veto": "trk:1 <script>"}, "&#34;&lt;script&gt;&#34; is not a track id."),
    ],
)
def test_bad_rules_are_refused_and_nothing_changes(salon, world, portal_app, fields, message):
    with sessions(portal_app)() as db:
        before = db.scalar(select(Merchant.rules).where(Merchant.slug == "salon-meche"))
    resp = rules_form(salon, world, **fields)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)
    with sessions(portal_app)() as db:
        assert db.scalar(select(Merchant.rules).where(Merchant.slug == "salon-meche")) == before


def test_rules_are_saved_for_the_merchant_and_shown_back(salon, world, portal_app):
    with sessions(portal_app)() as db:
        before = db.scalar(select(Merchant.rules).where(Merchant.slug == "salon-meche"))
    try:
        resp = rules_form(salon, world, volume_max="40", veto="trk:9, trk:8\ntrk:9")
        assert resp.status_code == 302
        with sessions(portal_app)() as db:
            saved = db.scalar(select(Merchant.rules).where(Merchant.slug == "salon-meche"))
        assert saved == {
            **(before or {}),
            "explicit": False,
            "volume_max": 40,
            "veto": ["trk:8", "trk:9"],
        }
        page = salon.get(resp.headers["Location"]).get_data(as_text=True)
        assert 'value="40"' in page and "trk:8\ntrk:9</textarea>" in page
        assert 'id="rules-explicit" checked' not in page
    finally:
        with sessions(portal_app)() as db:
            db.get(
                Merchant, db.scalar(select(Merchant.id).where(Merchant.slug == "salon-meche"))
            ).rules = before
            db.commit()


def test_staff_cannot_change_rules(salon_staff, world):
    assert rules_form(salon_staff, world, volume_max="10").status_code == 403


def test_devices_page_shows_which_paired_devices_are_online(salon, world, portal_server):
    device = world.devices["annex-spare"]
    token = TOKEN.search(post_action(salon, device, "rotate").get_data(as_text=True)).group(1)
    outcome: queue.Queue = queue.Queue()
    sio = socketio.Client(reconnection=False)
    sio.on("connect", lambda: outcome.put("connected"), namespace="/device")
    sio.connect(
        portal_server.url,
        namespaces=["/device"],
        auth={"token": token},
        transports=["polling"],
        wait=False,
    )
    try:
        assert outcome.get(timeout=10) == "connected"
        page = salon.get(f"/portal/venues/{world.annex_venue}/devices").get_data(as_text=True)
        row = re.search(r'<tr data-device="annex-spare">(.*?)</tr>', page, re.S).group(1)
        assert "Online" in row and "Offline" not in row
    finally:
        hang_up(sio)
