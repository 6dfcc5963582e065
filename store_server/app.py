"""Store server application factory (Flask + Flask-SocketIO)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask.typing import ResponseReturnValue
from flask_socketio import SocketIO
from socketio import RedisManager
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from store_server import api, db, devices, ops, optin, redis_store
from store_server.config import from_env
from store_server.routing import RouteMap
from store_server.sio_json import FastJSON, FastPacket, allow_long_payloads
from store_server.topology import Topology

log = logging.getLogger(__name__)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with a body nested past Python's recursion limit read as invalid JSON
    (get_json(silent=True) then gives None, and the view answers 400) rather than a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text; too deep a nesting raises ValueError like any malformed text."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class StoreFlask(Flask):
    """Flask with a URL map that leaves no cyclic garbage per request (see routing.py)."""

    url_map_class = RouteMap
    json_provider_class = _JSONProvider


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build a store server app: config from the environment, then `test_config` overrides."""
    app = StoreFlask(__name__)
    app.config.update(from_env())
    # Read here, not when the opt-in pages register: a bad setting stops the start before a
    # database or an embedded Redis is created.
    app.config.update(optin.defaults())
    if test_config:
        app.config.update(test_config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["INGEST_MAX_BODY"]
    db.init_app(app)
    redis_store.init_app(app)
    app.extensions["cm_topology"] = Topology(app)
    queue_url = app.config["SOCKETIO_MESSAGE_QUEUE"]
    allow_long_payloads()  # a device's acks for a replay come in one POST over polling
    socketio = SocketIO(
        app,
        async_mode=app.config["SOCKETIO_ASYNC_MODE"],
        # Flask-SocketIO picks Kombu for non-redis:// URLs; the embedded server is unix://.
        client_manager=RedisManager(queue_url, channel=_channel(app)) if queue_url else None,
        cors_allowed_origins=[],
        serializer=FastPacket,
        json=FastJSON,
    )
    _route_socketio_path(app, socketio.sockio_mw.engineio_path)
    devices.register(app, socketio)
    app.register_blueprint(api.bp)
    optin.init_app(app)
    ops.init_app(app)
    _register_errors(app)
    app.before_request(_refuse_cut_bodies)
    app.before_request(_refuse_nul_text)

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        """Liveness and store checks: SQL and Redis answer."""
        checks = {"sql": "ok", "redis": "ok"}
        try:
            db.get_db().execute(text("SELECT 1"))
        except Exception as e:  # any failure is reported, never raised
            checks["sql"] = f"error: {type(e).__name__}"
        try:
            redis_store.get_redis().ping()
        except Exception as e:
            checks["redis"] = f"error: {type(e).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return jsonify({"status": "ok" if ok else "degraded", **checks}), 200 if ok else 503

    return app


def _route_socketio_path(app: Flask, path: str) -> None:
    """A URL rule for the Socket.IO path, which Flask never dispatches (the Engine.IO middleware
    answers it first) but matches.

    Flask-SocketIO runs connect, disconnect and other decorated handlers in a request context of
    the connection's environ. Without a rule every such context failed routing and kept its
    NotFound, whose traceback holds the frames that hold it: some 25 objects of cyclic garbage
    per event, 50,000 when 2,000 devices reconnect, each batch freed in a collector pause that
    stalls every push in flight."""

    def _not_here() -> ResponseReturnValue:
        return jsonify({"error": "Socket.IO endpoint: connect with a Socket.IO client"}), 404

    app.add_url_rule(path, endpoint="socketio_path", view_func=_not_here, methods=["GET", "POST"])
    # A websocket connection's environ matches only a websocket rule (else WebsocketMismatch).
    app.add_url_rule(path, endpoint="socketio_path", view_func=_not_here, websocket=True)


def _channel(app: Flask) -> str:
    """Message-queue channel per key prefix, so deployments sharing a Redis never cross-talk."""
    return "cmood-" + app.config["REDIS_PREFIX"].rstrip(":")


def _refuse_cut_bodies() -> None:
    """A chunked body (no Content-Length) is cut at MAX_CONTENT_LENGTH by Werkzeug's stream,
    not refused: whatever followed would be lost unseen, and a signature might cover only the
    part read. Read once here (cached for the view and form parsing) and refused if it reached
    the limit; a body with a Content-Length over it is refused by Werkzeug already."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    chunked = request.content_length is None and request.environ.get("wsgi.input_terminated")
    if chunked and len(request.get_data(cache=True)) >= limit:
        raise RequestEntityTooLarge(f"The body reaches the {limit}-byte limit.")


def _refuse_nul_text() -> None:
    """A query or form value holding NUL is refused (400) before any view reads it: PostgreSQL
    text cannot store or compare one, so it reached the driver as an error (a 500 whose
    traceback carried the value), and no page asks anyone to type one. Paths: routing.Text."""
    values = [v for _, v in request.args.items(multi=True)]
    # Only form bodies are parsed here: a JSON or binary body is the view's to read and check.
    if request.mimetype in FORM_TYPES:
        # Parsed from a cached copy (bounded by MAX_CONTENT_LENGTH): a view that reads the raw
        # body (the signed ingest API, which answers a form body 415) must still find it.
        request.get_data(cache=True)
        values += [v for _, v in request.form.items(multi=True)]
    if any("\x00" in v for v in values):
        raise BadRequest("Text may not contain NUL characters.")


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> ResponseReturnValue:
        # Keep the exception's own headers (Allow on 405, WWW-Authenticate on 401).
        headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
        return jsonify({"error": e.description or e.name}), e.code, headers

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _redis_down(_e: Exception) -> ResponseReturnValue:
        log.warning("redis unavailable")
        return jsonify({"error": "live store unavailable, retry later"}), 503, {"Retry-After": "2"}

    @app.errorhandler(OperationalError)
    def _sql_down(_e: Exception) -> ResponseReturnValue:
        log.warning("database unavailable")
        return jsonify({"error": "database unavailable, retry later"}), 503, {"Retry-After": "5"}

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> ResponseReturnValue:
        log.exception("unexpected error")
        return jsonify({"error": "internal error"}), 500
