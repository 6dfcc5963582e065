"""The device page forgets a push at its `expires_at` with no revoke (the store server down, or
the tablet offline, when the presence ended) and drops that member's tracks from the queue; a
push that arrives already expired (the tablet asleep while it was in transit) is never shown.
Events are appended to the device's outbox and emitted as a delivery worker does."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect
from shapely.geometry import box

from store_server import outbox, services
from store_server.db import sessions
from store_server.models import Venue
from store_server.payloads import push_payload, queue_payload
from store_server.push import NAMESPACE, device_room, socket_event
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.privacy]
ZONE = "expiry"


def _device(app: Any, world: Any, name: str) -> tuple[int, str]:
    """A device of its own (a fresh venue of the salon), and its token."""
    with sessions(app)() as db:
        venue = db.get(Venue, world.salon_venue)
        annex = services.create_venue(db, venue.merchant, f"Salon — {name}", "site")
        zone = services.add_zone(db, annex, ZONE, "area", box(0, 0, 4, 3))
        device = services.add_device(db, annex, zone, name)
        token = services.issue_device_token(device)
        db.commit()
        device_id = device.id
    get_topology(app).invalidate()
    return device_id, token


def _push(who: str, expires_at: float) -> dict[str, Any]:
    tracks = [
        {"id": f"trk:{who}:{i}", "title": f"{who} song {i}", "artist": "A", "explicit": False}
        for i in (1, 2)
    ]
    body = push_payload(
        "playlist",
        who,
        [{"id": f"pl:{who}", "title": f"{who} mix", "tracks": tracks}],
        {},
        ZONE,
        expires_at,
    )
    return {**body, "at": time.time()}


def _queue(members: list[str], expires_at: float) -> dict[str, Any]:
    tracks = [
        {"id": f"trk:{m}:{i}", "title": f"{m} song {i}", "artist": "A", "by": m}
        for i in (1, 2)
        for m in members
    ]
    return queue_payload(
        ZONE,
        members,
        {"tracks": tracks, "genres": {}, "volume_max": None},
        time.time(),
        expires_at,
    )


def _send(app: Any, device_id: int, *bodies: dict[str, Any]) -> None:
    """As a delivery worker does: into the outbox, then emitted to the device's room."""
    r, keys = get_redis(app), get_keys(app)
    items = [(device_id, body) for body in bodies]
    ids = outbox.append_many(r, keys, items, app.config["OUTBOX_MAXLEN"], 3600)
    sio = app.extensions["socketio"]
    for body, event_id in zip(bodies, ids, strict=True):
        event = {**body, "event_id": event_id}
        sio.emit(socket_event(body), event, to=device_room(device_id), namespace=NAMESPACE)


def test_device_page_forgets_a_push_at_its_expiry_without_a_revoke(context, portal_app, world):
    device_id, token = _device(portal_app, world, "expiry-speaker")
    page = context.new_page()
    page.goto(f"/portal/device?lang=en#token={token}")
    expect(page.locator("#device-status")).to_have_attribute("data-state", "connected")
    expires = time.time() + 4
    # Ann's push ends with her consent in 4 s; bob's and the queue of both last an hour.
    _send(
        portal_app,
        device_id,
        _push("ann-exp", expires),
        _push("bob-stays", time.time() + 3600),
        _queue(["ann-exp", "bob-stays"], time.time() + 3600),
    )
    ann = page.locator('#pushes [data-subscriber="ann-exp"]')
    bob = page.locator('#pushes [data-subscriber="bob-stays"]')
    queue = page.locator("#queue > li")
    expect(ann).to_be_visible()
    expect(bob).to_be_visible()
    expect(queue).to_have_count(4)
    # No revoke comes: the page forgets her by itself, and her tracks leave the queue.
    expect(ann).to_have_count(0, timeout=15_000)
    assert time.time() >= expires  # not before
    expect(queue).to_have_count(2)
    expect(queue.filter(has_text="ann-exp")).to_have_count(0)
    expect(bob).to_be_visible()
    r, keys = get_redis(portal_app), get_keys(portal_app)
    assert wait_for(lambda: r.xlen(keys.outbox(device_id)) == 0, 10)  # all acked


def test_device_page_never_shows_a_push_that_arrives_expired(context, portal_app, world):
    device_id, token = _device(portal_app, world, "asleep-speaker")
    page = context.new_page()
    # The tablet's connection: what the server sends is held while the tablet sleeps.
    sent: list[Any] = []
    held: list[Any] = []
    sockets: list[Any] = []
    asleep = [False]

    def route(ws: Any) -> None:
        server = ws.connect_to_server()
        sockets.append(ws)
        ws.on_message(lambda m: (sent.append(m), server.send(m)))
        server.on_message(lambda m: held.append(m) if asleep[0] else ws.send(m))

    page.route_web_socket("**/socket.io/**", route)
    page.goto(f"/portal/device?lang=en#token={token}")
    expect(page.locator("#device-status")).to_have_attribute("data-state", "connected")
    while "5" not in sent:  # the upgrade to the websocket is done: events come this way
        page.wait_for_timeout(50)
    asleep[0] = True
    expires = time.time() + 2
    _send(portal_app, device_id, _push("ann-late", expires), _queue(["ann-late"], expires))
    while sum("ann-late" in str(m) for m in held) < 2 or time.time() <= expires:
        page.wait_for_timeout(50)
    # It wakes up: both arrive after her consent's end.
    asleep[0] = False
    for m in held:
        sockets[-1].send(m)
    _send(portal_app, device_id, _push("bob-fresh", time.time() + 3600))
    expect(page.locator('#pushes [data-subscriber="bob-fresh"]')).to_be_visible()
    r, keys = get_redis(portal_app), get_keys(portal_app)
    assert wait_for(lambda: r.xlen(keys.outbox(device_id)) == 0, 10)  # hers acked too
    expect(page.locator('#pushes [data-subscriber="ann-late"]')).to_have_count(0)
    expect(page.locator("#queue-panel")).to_be_hidden()
    assert "ann-late" not in page.locator("#play-panel").inner_text()
