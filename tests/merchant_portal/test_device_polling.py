"""The device page on HTTP long-polling, as behind a proxy that refuses websockets: a reconnect
replays more events than python-engineio's default payload limit (16 packets), and the acks the
page sends back for them in one POST must all reach the server."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect
from shapely.geometry import box

from store_server import outbox, services
from store_server.db import sessions
from store_server.models import Venue
from store_server.push import skip
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
REPLAYED = 40


def test_device_page_on_polling_acks_a_long_replay(context, portal_app, world):
    with sessions(portal_app)() as db:
        venue = db.get(Venue, world.salon_venue)
        annex = services.create_venue(db, venue.merchant, "Salon — polling annex", "site")
        zone = services.add_zone(db, annex, "polling", "area", box(0, 0, 4, 3))
        device = services.add_device(db, annex, zone, "polling-speaker")
        token = services.issue_device_token(device)
        db.commit()
        venue_id, device_id = annex.id, device.id
    get_topology(portal_app).invalidate()
    # Staff skipped tracks while the device was offline: each is an outboxed control event.
    assert all(skip(portal_app, venue_id, "polling", f"trk:{i}") == 1 for i in range(REPLAYED))
    r, keys = get_redis(portal_app), get_keys(portal_app)
    assert len(outbox.pending(r, keys, device_id, time.time())) == REPLAYED

    page = context.new_page()
    refused: list[str] = []
    page.route_web_socket("**/socket.io/**", lambda ws: (refused.append(ws.url), ws.close()))
    page.goto(f"/portal/device?lang=en#token={token}")
    expect(page.locator("#device-status")).to_have_attribute("data-state", "connected")
    # The page acks each event once obeyed: every one of them leaves the outbox.
    assert wait_for(lambda: not outbox.pending(r, keys, device_id, time.time()), 10)
    assert refused  # it tried to upgrade and stayed on polling
