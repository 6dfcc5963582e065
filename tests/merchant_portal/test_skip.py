"""Skip from the live page: the zone's devices are told once, through their outbox; nobody else."""

from __future__ import annotations

import pytest
import requests

from store_server import services
from store_server.db import sessions
from store_server.models import Device
from tests.helpers import DeviceClient
from tests.merchant_portal.conftest import CAR_LOGIN, SALON_LOGIN, csrf_of

pytestmark = pytest.mark.e2e


def session_of(url: str, email: str, password: str) -> requests.Session:
    """A signed-in portal session over real HTTP."""
    s = requests.Session()
    token = csrf_of(s.get(f"{url}/portal/login", timeout=10).text)
    resp = s.post(
        f"{url}/portal/login",
        data={"email": email, "password": password, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302
    return s


def fresh_token(app, device_id: int) -> str:  # type: ignore[no-untyped-def]
    """Rotate a device's token (other tests pair and rotate the demo devices too)."""
    with sessions(app)() as db:
        token = services.issue_device_token(db.get(Device, device_id))
        db.commit()
    return token


def test_skip_tells_the_zones_device_and_is_refused_elsewhere(portal_app, portal_server, world):
    url, venue = portal_server.url, world.salon_venue
    device = DeviceClient(url, fresh_token(portal_app, world.devices["demo-chair-2-speaker"]))
    try:
        staff = session_of(url, *SALON_LOGIN)
        token = csrf_of(staff.get(f"{url}/portal/venues/{venue}/live", timeout=10).text)
        skip_url = f"{url}/portal/venues/{venue}/skip"
        headers = {"X-CSRF-Token": token}
        resp = staff.post(
            skip_url, json={"zone": "chair-2", "track": "trk:1001"}, headers=headers, timeout=10
        )
        assert resp.status_code == 200 and resp.json() == {"ok": True, "devices": 1}
        # Other tests' events may be pending for this device: the skip is the control event.
        ev = next(e for e in iter(device.next, None) if e["type"] == "control")
        assert {k: ev[k] for k in ("type", "action", "zone", "track")} == {
            "type": "control",
            "action": "skip",
            "zone": "chair-2",
            "track": "trk:1001",
        }
        bad = staff.post(skip_url, json={"zone": "nope", "track": "trk:1"}, headers=headers)
        assert bad.status_code == 400 and "error" in bad.json()
        # A trailing newline is not part of any track id ($ would have matched before it).
        bad = staff.post(skip_url, json={"zone": "chair-2", "track": "trk:1\n"}, headers=headers)
        assert bad.status_code == 400 and "error" in bad.json()
        forged = staff.post(skip_url, json={"zone": "chair-2", "track": "trk:1"})
        assert forged.status_code in (400, 403)
        other = session_of(url, *CAR_LOGIN)
        other_token = csrf_of(other.get(f"{url}/portal/", timeout=10).text)
        denied = other.post(
            skip_url,
            json={"zone": "chair-2", "track": "trk:1"},
            headers={"X-CSRF-Token": other_token},
        )
        assert denied.status_code == 404
        leftovers = []
        while not device.events.empty():
            leftovers.append(device.events.get_nowait())
        assert not [e for e in leftovers if e["type"] == "control"]  # refused skips sent nothing
    finally:
        device.sio.disconnect()
