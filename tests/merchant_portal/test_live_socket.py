"""The /portal Socket.IO namespace over a real network connection: session-cookie
authentication, rooms only for the staff member's own venues, and presence as it happens."""

from __future__ import annotations

import queue

import pytest
import requests
import socketio

from store_server.crypto import pseudonym
from tests.merchant_portal.conftest import CAR_LOGIN, SALON_LOGIN, csrf_of, hang_up, make_present

pytestmark = [pytest.mark.authz, pytest.mark.e2e]
CAR = "Berline AB-123-CD"


def signed_in_cookie(url: str, email: str, password: str) -> str:
    """The session cookie of a real sign-in over HTTP."""
    s = requests.Session()
    token = csrf_of(s.get(f"{url}/portal/login", timeout=10).text)
    resp = s.post(
        f"{url}/portal/login",
        data={"email": email, "password": password, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302
    return f"session={s.cookies['session']}"


class PortalWatcher:
    """A staff member's live connection to one venue, recording presence events."""

    def __init__(
        self, url: str, venue: object, cookie: str | None, origin: str | None = None
    ) -> None:
        self.events: queue.Queue = queue.Queue()
        outcome: queue.Queue = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("presence", self.events.put, namespace="/portal")
        self.sio.on("connect", lambda: outcome.put("connected"), namespace="/portal")
        self.sio.on("connect_error", lambda *_a: outcome.put("refused"), namespace="/portal")
        self.sio.connect(
            url,
            namespaces=["/portal"],
            auth={"venue": venue},
            headers={
                **({"Cookie": cookie} if cookie else {}),
                **({"Origin": origin} if origin else {}),
            },
            # Long-polling: the same Socket.IO protocol, without the development server's slow
            # websocket close handshake on every disconnect (the browser tests use websockets).
            transports=["polling"],
            wait=False,
        )
        self.outcome = outcome.get(timeout=10)

    def next(self, timeout: float = 20.0) -> dict:
        """The next presence event."""
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        """Hang up without waiting for the server's last long-poll to return."""
        hang_up(self.sio)


# 2**31 and 2**63 passed the type check and failed the query on PostgreSQL (integer out of
# range): the connect handler raised, and the client waited with no answer.
@pytest.mark.parametrize("venue", ["car", 999_999, "1", None, True, 0, -1, 2**31, 2**63])
def test_refused_without_a_session_or_for_a_venue_not_ones_own(portal_server, world, venue):
    cookie = signed_in_cookie(portal_server.url, *SALON_LOGIN)
    target = world.car_venue if venue == "car" else venue
    for watcher in (
        PortalWatcher(portal_server.url, target, cookie),
        PortalWatcher(portal_server.url, world.salon_venue, None),
    ):
        watcher.close()
        assert watcher.outcome == "refused"
    # ... while the same session is let in to its own venue.
    own = PortalWatcher(portal_server.url, world.salon_venue, cookie)
    own.close()
    assert own.outcome == "connected"


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "http://[", "null"]
)
def test_refused_from_a_page_of_another_origin(portal_server, world, origin):
    # The session cookie is SameSite=Lax: a page of another origin of the same site (another
    # port, a sibling subdomain) opening a websocket here sends it along, and would watch the
    # staff member's venue live. Browsers always send Origin on such a handshake: only ours is let
    # in (a client that sends none, like a Python device, has no browser's cookies to ride on).
    cookie = signed_in_cookie(portal_server.url, *SALON_LOGIN)
    foreign = PortalWatcher(portal_server.url, world.salon_venue, cookie, origin=origin)
    foreign.close()
    assert foreign.outcome == "refused"
    ours = PortalWatcher(portal_server.url, world.salon_venue, cookie, origin=portal_server.url)
    ours.close()
    assert ours.outcome == "connected"


def test_presence_reaches_the_owner_live_and_no_other_merchant(portal_server, world):
    car = PortalWatcher(
        portal_server.url, world.car_venue, signed_in_cookie(portal_server.url, *CAR_LOGIN)
    )
    salon = PortalWatcher(
        portal_server.url, world.salon_venue, signed_in_cookie(portal_server.url, *SALON_LOGIN)
    )
    assert car.outcome == salon.outcome == "connected"
    try:
        bob = pseudonym(world.demo.merchant_keys[CAR], world.demo.subscribers["bob"])
        make_present(portal_server, world, "bob", "demo-car-scanner")
        enter = car.next()
        assert enter == {**enter, "kind": "enter", "zone": "cabin", "subscriber": bob}
        assert enter["venue_id"] == world.car_venue
        exit_ = car.next()
        assert exit_ == {**exit_, "kind": "exit", "subscriber": bob, "reason": "absent"}
        # The salon's staff, connected the whole time, heard nothing of the car.
        with pytest.raises(queue.Empty):
            salon.events.get(timeout=0.5)
    finally:
        car.close()
        salon.close()


def test_signing_out_closes_the_live_connection(portal_server, world):
    s = requests.Session()
    token = csrf_of(s.get(f"{portal_server.url}/portal/login", timeout=10).text)
    s.post(
        f"{portal_server.url}/portal/login",
        data={"email": SALON_LOGIN[0], "password": SALON_LOGIN[1], "csrf_token": token},
        timeout=10,
    )
    watcher = PortalWatcher(portal_server.url, world.salon_venue, f"session={s.cookies['session']}")
    gone: queue.Queue = queue.Queue()
    watcher.sio.on("disconnect", lambda *_a: gone.put(True), namespace="/portal")
    page = s.get(f"{portal_server.url}/portal/", timeout=10).text
    s.post(f"{portal_server.url}/portal/logout", data={"csrf_token": csrf_of(page)}, timeout=10)
    assert gone.get(timeout=10)
    watcher.close()
