"""Per-request plumbing: a request id on every response and log line, timing, metrics, access log.

Routes stay unaware of it. The access log names the route template, never the raw path, because
paths carry opt-in tokens and ids.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, Response, g, has_request_context, request

from store_server.ops.metrics import Metrics

HEADER = "X-Request-Id"
# Set only where a page did not choose its own (the opt-in and portal pages set stricter ones).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# A caller's id (a proxy's, or a scanner's retry) is kept only when it is short and plain.
INCOMING_ID = re.compile(r"^[0-9A-Za-z._-]{8,64}\Z")
access_log = logging.getLogger("store_server.access")
_factory_installed = False


def request_id() -> str | None:
    """The current request's id (None outside a request)."""
    if not has_request_context():
        return None
    return g.get("request_id")


def install_log_context() -> None:
    """Stamp `request_id` on every log record made while a request is handled (once per process).

    So a caller must not pass `request_id` in a logger's `extra`: logging refuses to overwrite it.
    """
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        rid = request_id()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def init_app(app: Flask, metrics: Metrics) -> None:
    """Register the before/after request hooks."""
    install_log_context()

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get(HEADER, "")
        g.request_id = incoming if INCOMING_ID.match(incoming) else uuid.uuid4().hex
        g.cm_t0 = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = g.get("request_id") or uuid.uuid4().hex
        response.headers[HEADER] = rid
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        t0 = g.get("cm_t0")
        seconds = time.perf_counter() - t0 if t0 is not None else 0.0
        # Unmatched paths share one label so that probing cannot explode the series count.
        endpoint = request.endpoint or "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.request_seconds.labels(endpoint).observe(seconds)
        if endpoint == "api.sightings":
            _account_sightings(metrics, response, seconds)
        elif endpoint == "api.heartbeat" and response.status_code == 200:
            metrics.heartbeats.labels(request.headers.get("X-CM-Scanner", "")[:64]).inc()
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
        return response


def _account_sightings(metrics: Metrics, response: Response, seconds: float) -> None:
    body = response.get_json(silent=True) if response.is_json else None
    metrics.observe_ingest(response.status_code, body, seconds)
    # api.sightings may leave its ingest.Outcome in g; resolution counts come only from there.
    outcome = g.get("ingest_outcome")
    if response.status_code == 200 and outcome is not None and not outcome.duplicate:
        metrics.resolved.inc(outcome.resolved)
