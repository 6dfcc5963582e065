"""App wiring: the Socket.IO path is routed for Flask-SocketIO's handler contexts, Socket.IO
events leave no cyclic garbage behind (the collector's pauses stall every push in flight), and
text PostgreSQL cannot hold is refused before any view."""

from __future__ import annotations

import gc

import pytest
import socketio
from flask import request
from werkzeug.exceptions import NotFound

from store_server.seed import seed_demo


def test_socketio_path_routes_without_a_routing_exception(app):
    with app.test_request_context("/socket.io/"):
        assert request.routing_exception is None
        assert request.url_rule.endpoint == "socketio_path"


def test_socketio_path_is_still_answered_by_engineio(client):
    # The rule only matches: Engine.IO answers the path before Flask could dispatch it.
    resp = client.get("/socket.io/")
    assert resp.status_code == 400
    assert b"Socket.IO endpoint" not in resp.data


def test_device_connects_leave_no_routing_exceptions_to_collect(
    app, db, live_server, saved_garbage
):
    token = seed_demo(db, app.config["DATA_KEY"]).devices["demo-chair-2-speaker"]
    for _ in range(5):
        c = socketio.Client(reconnection=False)
        c.connect(live_server.url, namespaces=["/device"], auth={"token": token}, wait_timeout=10)
        c.disconnect()
    gc.collect()
    # Before the rule each connect and disconnect handler context kept a NotFound in a cycle.
    assert [o for o in saved_garbage if isinstance(o, NotFound)] == []


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("GET", "/healthz", {"query_string": {"x": "a\x00b"}}),
        ("POST", "/optin/verify", {"data": {"receipt": "\x00"}}),
        ("POST", "/optin/verify", {"data": {"receipt": "x", "other": "\x00"}}),
    ],
    ids=["query", "form", "any-form-field"],
)
def test_a_nul_in_a_query_or_form_value_is_a_json_400(client, method, path, kw):
    # PostgreSQL text cannot hold NUL: wherever such a value reached SQL it was a 500.
    resp = client.open(path, method=method, **kw)
    assert resp.status_code == 400 and "NUL" in resp.get_json()["error"]


def test_a_json_body_is_left_to_its_view(client):
    # The guard parses form bodies only: a JSON body stays unread for the view (and its checks).
    resp = client.post("/api/v1/sightings", json={"scanner": "\x00"})
    assert resp.status_code != 500 and "NUL" not in resp.get_data(as_text=True)
