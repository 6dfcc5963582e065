"""Two workers of one deployment (the composed app in two processes on one database, Redis and
Socket.IO message queue): a sign-out served by one closes what the same session watches live
through the other, and a device connected to one is shown online by the other."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from store_server import services
from store_server.db import sessions
from store_server.models import Device as DeviceRow
from store_server.redis_store import get_keys, get_redis
from tests.conftest import scaled_out
from tests.faults.support import wait_for
from tests.merchant_portal.conftest import csrf_of, signed_in_session
from tests.merchant_portal.test_live_socket import PortalWatcher
from tests.store_server.test_push_e2e import Device

pytestmark = [pytest.mark.authz, pytest.mark.e2e, pytest.mark.slow]
EMAIL, PASSWORD = "owner@scaleout.test", "scaleout-pass-2026"


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Any, str, str, int, int]]:
    """(app of worker A, URL of A, URL of B, the venue's id, its owner's id)."""
    # A worker's claim to be running renewed every second, not every ten.
    with scaled_out(tmp_path, "wsgi:build_app", WORKER_ALIVE_TTL_S=3) as (app, url_a, url_b):
        with sessions(app)() as db:
            merchant = services.create_merchant(db, "scaleout", "Scale-out salon", "salon")
            venue = services.create_venue(db, merchant, "Scale-out salon", "site")
            owner = services.create_staff(db, EMAIL, PASSWORD, "owner", merchant)
            services.add_device(db, venue, None, "chair-speaker")
            db.commit()
            venue_id, owner_id = venue.id, owner.id
        yield app, url_a, url_b, venue_id, owner_id


def test_signing_out_on_one_worker_closes_the_live_view_held_by_the_other(two_workers):
    app, url_a, url_b, venue_id, owner_id = two_workers
    browser = signed_in_session(url_b, EMAIL, PASSWORD)
    # A copy of the cookie watches the venue live through worker B.
    watcher = PortalWatcher(url_b, venue_id, f"session={browser.cookies['session']}")
    assert watcher.outcome == "connected"
    gone: queue.Queue = queue.Queue()
    watcher.sio.on("disconnect", lambda *_a: gone.put(True), namespace="/portal")
    try:
        assert get_redis(app).hlen(get_keys(app).staff_sockets(owner_id)) == 1
        # The owner signs out in the browser; nginx sends that request to worker A, which holds
        # no socket of hers: before, only A's own sockets were closed, and the copy kept
        # watching every presence through B until its network dropped.
        page = browser.get(f"{url_a}/portal/", timeout=10).text
        out = browser.post(f"{url_a}/portal/logout", data={"csrf_token": csrf_of(page)}, timeout=10)
        assert out.status_code == 200
        assert gone.get(timeout=10)
        assert get_redis(app).exists(get_keys(app).staff_sockets(owner_id)) == 0
    finally:
        watcher.close()


def speaker_token(app: Any, venue_id: int) -> tuple[str, int]:
    """A fresh token for the venue's speaker, and its id."""
    with sessions(app)() as db:
        device = db.scalar(select(DeviceRow).where(DeviceRow.venue_id == venue_id))
        token, device_id = services.issue_device_token(device), device.id
        db.commit()
    return token, device_id


def device_row(browser: Any, url: str, venue_id: int) -> str:
    """The devices page's row of the venue's speaker, as served by the worker at `url`."""
    page = browser.get(f"{url}/portal/venues/{venue_id}/devices", timeout=10).text
    return re.search(r'<tr data-device="chair-speaker">(.*?)</tr>', page, re.S).group(1)


def test_a_device_connected_to_one_worker_is_shown_online_by_the_other(two_workers):
    app, url_a, url_b, venue_id, _owner_id = two_workers
    token, device_id = speaker_token(app, venue_id)
    browser = signed_in_session(url_a, EMAIL, PASSWORD)
    assert "Offline" in device_row(browser, url_a, venue_id)
    speaker = Device(url_b, token)
    try:
        assert speaker.drained()  # connected through worker B
        # Worker A holds no socket of it: before, A showed it offline (half the page loads,
        # with nginx spreading them over two workers).
        assert "Online" in device_row(browser, url_a, venue_id)
        keys = get_keys(app)
        (worker,) = get_redis(app).hvals(keys.device_sockets(device_id))
        # B killed: its disconnect handlers never run and its socket stays recorded, but its
        # claim to be running is no longer renewed and lapses (WORKER_ALIVE_TTL_S).
        get_redis(app).delete(keys.worker_alive(worker))
        assert "Offline" in device_row(browser, url_a, venue_id)
        # B still runs here, and renews its claim while it holds the socket.
        assert wait_for(lambda: get_redis(app).exists(keys.worker_alive(worker)), timeout=15)
        assert "Online" in device_row(browser, url_a, venue_id)
    finally:
        speaker.close()
    assert wait_for(lambda: not get_redis(app).exists(keys.device_sockets(device_id)), 10)
    assert "Offline" in device_row(browser, url_a, venue_id)


def test_sockets_a_killed_worker_left_are_dropped_at_the_next_connect(two_workers):
    app, url_a, url_b, venue_id, _owner_id = two_workers
    token, device_id = speaker_token(app, venue_id)
    r, key = get_redis(app), get_keys(app).device_sockets(device_id)
    # What a worker killed mid-connection leaves once its claim has lapsed: its socket's id,
    # never removed by a disconnect handler (before, each reconnect kept such ids a week more).
    r.hset(key, "sid-of-a-killed-worker", "0123456789abcdef")
    on_b = Device(url_b, token)
    try:
        assert on_b.drained()
        (on_b_sid,) = r.hkeys(key)
        on_a = Device(url_a, token)  # a second connection: B's live one must stay
        try:
            assert on_a.drained()
            assert on_b_sid in r.hkeys(key) and r.hlen(key) == 2
        finally:
            on_a.close()
    finally:
        on_b.close()
