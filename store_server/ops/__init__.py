"""Operations: metrics, request ids, readiness, the OpenAPI document (the doctor is its own module).

Everything here is attached from `init_app`; routes elsewhere need no change to be measured.
"""

from __future__ import annotations

import hmac
import os

from flask import Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from store_server.ops import checks, hooks, openapi
from store_server.ops.metrics import Metrics
from store_server.redis_store import get_redis


def init_app(app: Flask) -> None:
    """Register operational endpoints and request hooks on the store server."""
    metrics = Metrics(app)
    app.extensions["cm_metrics"] = metrics
    hooks.init_app(app, metrics)
    app.add_url_rule("/metrics", "ops.metrics", _metrics_view, methods=["GET"])
    app.add_url_rule("/readyz", "ops.readyz", _readyz_view, methods=["GET"])
    app.add_url_rule("/openapi.json", "ops.openapi", openapi.openapi_view, methods=["GET"])


def get_metrics(app: Flask | None = None) -> Metrics:
    """The app's metrics (jobs record report runs with `get_metrics(app).report_jobs`)."""
    return (app or current_app).extensions["cm_metrics"]


def _metrics_view() -> ResponseReturnValue:
    """Prometheus exposition of this app's registry."""
    # Optional bearer token: metrics name scanners and volumes, which not everyone should see.
    token = current_app.config.get("METRICS_TOKEN") or os.environ.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return jsonify({"error": "metrics need a bearer token"}), 401
    return Response(generate_latest(get_metrics().registry), content_type=CONTENT_TYPE_LATEST)


def _readyz_view() -> ResponseReturnValue:
    """Ready to take traffic: SQL and Redis answer and the schema is at the code's head."""
    engine = current_app.extensions["cm_engine"]
    results = {
        "sql": checks.sql_ping(engine),
        "migrations": checks.migrations_at_head(engine),
        "redis": checks.redis_ping(get_redis()),
    }
    ok = all(passed for passed, _ in results.values())
    doc = {"status": "ready" if ok else "not ready", **{k: v for k, (_, v) in results.items()}}
    if ok:
        return jsonify(doc), 200
    return jsonify(doc), 503, {"Retry-After": "5"}
