"""The authorisation matrix, run: every row of `matrix.py` for every role, with real credentials,
through the Flask test client (HTTP) and real python-socketio clients on a live server (events).
A route or Socket.IO handler the app has and the table lacks fails the coverage tests."""

from __future__ import annotations

import queue
from typing import Any
from urllib.parse import urlsplit

import pytest
import socketio
from flask import Flask
from socketio.packet import DISCONNECT, Packet
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from tests.authz.conftest import World, build_cell, fresh_device_principal
from tests.authz.matrix import HTTP, ROLES, SOCKET
from tests.conftest import LiveServer
from tests.faults.support import wait_for
from tests.merchant_portal.conftest import hang_up

pytestmark = pytest.mark.authz
# Where an anonymous visitor is sent to identify: the portal's, the subscriber's and the
# auditor's sign-in pages, and the opt-in link's landing page (its sign-in form).
SIGN_IN = {"portal.login", "rights.signin", "auditor.signin", "optin.landing"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # answered by Flask itself, like the GET they mirror


def app_routes(app: Flask) -> dict[tuple[str, str], Rule]:
    """Every (method, rule) the app serves."""
    return {
        (method, rule.rule): rule
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - IGNORED_METHODS)
    }


def app_events(app: Flask) -> set[tuple[str, str]]:
    """Every (namespace, event) with a handler on the app's Socket.IO server."""
    handlers = app.extensions["socketio"].server.handlers
    return {(ns, event) for ns, events in handlers.items() for event in events}


def test_every_route_has_a_row(authz_app):
    routes = set(app_routes(authz_app))
    assert not routes - set(HTTP), "routes without a row in tests/authz/matrix.py"
    assert not set(HTTP) - routes, "rows for routes the app no longer has"


def test_every_socket_event_has_a_row(authz_app):
    events = app_events(authz_app)
    assert not events - set(SOCKET), "Socket.IO handlers without a row in tests/authz/matrix.py"
    assert not set(SOCKET) - events, "rows for Socket.IO handlers the app no longer has"


def classify(app: Flask, status: int, location: str | None) -> str:
    """The outcome class of a response: ok, login (sent to sign in) or the status code."""
    if 200 <= status < 300:
        return "ok"
    if 300 <= status < 400:
        adapter = app.url_map.bind("localhost")
        try:
            endpoint, _args = adapter.match(urlsplit(location or "").path, method="GET")
        except HTTPException:
            endpoint = None
        return "login" if endpoint in SIGN_IN else "ok"
    return str(status)


@pytest.mark.parametrize(
    ("route", "role"),
    [(route, role) for route in HTTP for role in ROLES],
    ids=[f"{m} {r} as {role}" for (m, r) in HTTP for role in ROLES],
)
def test_http(authz_app, world: World, route: tuple[str, str], role: str):
    method, rule = route
    known = app_routes(authz_app)
    if route not in known:
        pytest.fail(f"{method} {rule} is in the table but not served (see the coverage test)")
    cell = build_cell(world, method, known[route].endpoint, rule, role)
    kwargs = dict(cell.kwargs)
    kwargs["headers"] = {**kwargs.get("headers", {}), **cell.principal.headers(cell.body)}
    resp = cell.principal.client(authz_app).open(cell.path, method=method, **kwargs)
    got = classify(authz_app, resp.status_code, resp.headers.get("Location"))
    expected = HTTP[route][role]
    assert got == expected, (
        f"{method} {cell.path} as {role}: expected {expected}, got {got} "
        f"({resp.status_code} {resp.headers.get('Location', '')} "
        f"{resp.get_data(as_text=True)[:200]!r})"
    )


class SocketProbe:
    """A real python-socketio client connecting to one namespace with a principal's credentials
    (its token, its cookies, merchant A's venue) and reporting whether it was let in."""

    def __init__(self, server: LiveServer, namespace: str, auth: dict, cookie: str) -> None:
        self.namespace = namespace
        outcome: queue.Queue = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("connect", lambda: outcome.put("ok"), namespace=namespace)
        self.sio.on("connect_error", lambda *_a: outcome.put("refused"), namespace=namespace)
        self.sio.connect(
            server.url,
            namespaces=[namespace],
            auth=auth,
            headers={"Cookie": cookie} if cookie else {},
            transports=["polling"],
            wait=False,
        )
        self.outcome = outcome.get(timeout=10)

    def call(self, event: str, data: Any = None) -> Any:
        """Emit an event and wait for the server's answer."""
        return self.sio.call(event, data, namespace=self.namespace, timeout=10)

    def close(self) -> None:
        """Hang up at once."""
        hang_up(self.sio)


CONNECTED = {"/device": "cm_connected_devices", "/portal": "cm_portal_connected"}


def run_event(app: Flask, probe: SocketProbe, event: str) -> str:
    """Send one event over a connected probe; ok when the server did what was asked."""
    if event == "connect":
        return "ok"
    if event == "disconnect":
        connected = app.extensions[CONNECTED[probe.namespace]]
        sid = probe.sio.get_sid(probe.namespace)
        assert sid in connected, "the server does not hold the connection it accepted"
        # Not sio.disconnect(): it marks the transport closed before its writer thread has sent
        # the DISCONNECT packet, which then may never leave. Send it and wait until it is posted.
        probe.sio.eio.send(Packet(DISCONNECT, namespace=probe.namespace).encode())
        probe.sio.eio.queue.join()
        return "ok" if wait_for(lambda: sid not in connected, 10) else "still connected"
    data = {"event_id": "1-0"} if event == "ack" else None
    answer = probe.call(event, data)
    return "ok" if isinstance(answer, dict) and answer.get("ok") is True else "denied"


@pytest.mark.parametrize(
    ("key", "role"),
    [(key, role) for key in SOCKET for role in ROLES],
    ids=[f"{ns} {event} as {role}" for (ns, event) in SOCKET for role in ROLES],
)
def test_socket(authz_app, world: World, authz_server: LiveServer, key, role):
    namespace, event = key
    if key not in app_events(authz_app):
        pytest.fail(f"{namespace} {event} is in the table but has no handler")
    p = fresh_device_principal(world, role) if event == "rotate_token" else world.principals[role]
    token = p.bearer or (p.scanner[1] if p.scanner else None)
    probe = SocketProbe(
        authz_server, namespace, {"token": token, "venue": world.venue_a}, p.cookie_header()
    )
    try:
        got = probe.outcome if probe.outcome == "refused" else run_event(authz_app, probe, event)
    finally:
        probe.close()
    expected = SOCKET[key][role]
    assert got == expected, f"{namespace} {event} as {role}: expected {expected}, got {got}"
