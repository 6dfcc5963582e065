"""App wiring: the Socket.IO path is routed for Flask-SocketIO's handler contexts, and Socket.IO
events leave no cyclic garbage behind (the collector's pauses stall every push in flight)."""

from __future__ import annotations

import gc

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
