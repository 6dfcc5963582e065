"""The OpenAPI 3.1 document of the HTTP APIs this process actually serves.

Operations are described here, next to each other, and a path is published only when the app has a
matching route, so a store server alone and the composed store server + portal each describe
exactly themselves. Limits are read from the app's configuration, so the contract cannot drift
from what the validators enforce.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from beacons import signing

JSON = "application/json"
VERSION = "0.1.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _unavailable() -> dict[str, Any]:
    resp = _error("A store is unavailable; retry after the delay given")
    resp["headers"] = {
        "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
    }
    return resp


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _redirect(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
    }


SIGNED_REQUEST_DOC = (
    "Signed by the scanner: X-CM-Signature is the hex HMAC-SHA256, keyed with the scanner's "
    "secret (hex-decoded), of `timestamp + '\\n' + nonce + '\\n'` followed by the raw body. "
    "The timestamp must be within the accepted window of the server's clock and each nonce is "
    "accepted once."
)


def _signed_operation(
    summary: str, body_schema: str, ok: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    responses = {
        "200": ok,
        "400": _error("The body is not valid JSON or breaks a limit (the reason is given)"),
        "401": _json(
            _ref("AuthError"),
            "Missing or malformed signature headers, bad signature, unknown scanner, or a "
            "timestamp outside the window (then `skew_s` and `window_s` say by how much)",
        ),
        "409": _error("The nonce was already used: a replayed request"),
        "413": _error(
            "The body is larger than the configured limit (a chunked body reaching it counts)"
        ),
        "415": _error("Content-Type is not application/json, or the body is content-encoded"),
        "503": _unavailable(),
    }
    responses.update(extra)
    return {
        "summary": summary,
        "description": SIGNED_REQUEST_DOC,
        "tags": ["scanners"],
        "parameters": [{"$ref": f"#/components/parameters/{p}"} for p in SIGNATURE_PARAMS],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref(body_schema)}}},
        "responses": responses,
    }


SIGNATURE_PARAMS = ("Scanner", "Timestamp", "Nonce", "Signature")


def _sighting(kind: str, hex_digits: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["ts", "kind", "id", "rssi"],
        "properties": {
            "ts": {
                "type": "number",
                "description": (
                    "Unix seconds when heard: at most 7 days old and not ahead of the server's "
                    "clock by more than the signature window"
                ),
            },
            "kind": {"type": "string", "const": kind},
            "id": {"type": "string", "pattern": f"^[0-9a-f]{{{hex_digits}}}$"},
            "rssi": {"type": "number", "minimum": -130, "maximum": 20},
            "tx_power": {
                "type": "number",
                "description": (
                    "The calibrated power the frame carries (Eddystone: dBm at 0 m; iBeacon: at "
                    "1 m). Between -100 and 20 it sets where a new track's emitter level starts "
                    "(a wearable transmits below a phone); anything else is ignored"
                ),
            },
        },
    }


def _components(app: Flask) -> dict[str, Any]:
    cfg = app.config
    number = {"type": "number"}
    counter = {"type": "number", "minimum": 0}
    return {
        "parameters": {
            "Scanner": {
                "name": signing.HEADER_SCANNER,
                "in": "header",
                "required": True,
                "description": "The scanner's registered name",
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            "Timestamp": {
                "name": signing.HEADER_TIMESTAMP,
                "in": "header",
                "required": True,
                "description": (
                    f"Unix seconds, within {cfg['INGEST_MAX_SKEW_S']} s of the server's clock"
                ),
                "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            },
            "Nonce": {
                "name": signing.HEADER_NONCE,
                "in": "header",
                "required": True,
                "description": "Fresh random hex, never reused",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{16,64}$"},
            },
            "Signature": {
                "name": signing.HEADER_SIGNATURE,
                "in": "header",
                "required": True,
                "description": "Hex HMAC-SHA256 (see the operation's description)",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "AuthError": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "skew_s": {"type": "number", "description": "Scanner clock minus server's"},
                    "window_s": {"type": "integer"},
                },
            },
            "Sighting": {"oneOf": [_sighting("eid", 16), _sighting("ibeacon", 40)]},
            "Batch": {
                "type": "object",
                "required": ["batch_id", "sightings"],
                "properties": {
                    "batch_id": {
                        "type": "string",
                        "pattern": "^[0-9A-Za-z_-]{8,64}$",
                        "description": "Kept across retries: a batch is processed once",
                    },
                    "sent_at": number,
                    "sightings": {
                        "type": "array",
                        "maxItems": cfg["INGEST_MAX_BATCH"],
                        "items": _ref("Sighting"),
                    },
                },
            },
            "IngestResult": {
                "type": "object",
                "required": ["accepted", "duplicate"],
                "properties": {
                    "accepted": {"type": "integer", "minimum": 0},
                    "duplicate": {
                        "type": "boolean",
                        "description": "True when this batch id was already processed",
                    },
                },
            },
            "Heartbeat": {
                "type": "object",
                "properties": {
                    "uptime_s": counter,
                    "queue_depth": counter,
                    "queue_dropped": counter,
                    "frames_heard": counter,
                    "frames_forwarded": counter,
                    "frames_dropped": counter,
                    "batches_sent": counter,
                    "batches_rejected": counter,
                    "adapter": {
                        "type": "string",
                        "enum": ["up", "down", "simulated", "replay", "unknown"],
                    },
                    "version": {"type": "string", "description": "Kept to 32 characters"},
                    "through": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1e11,
                        "description": (
                            "Unix time (the scanner's clock) before which every frame the "
                            "scanner heard has been delivered. Absence is judged no later "
                            "than this for the visitors it heard, so a cut uplink is not "
                            "taken for them leaving. Optional."
                        ),
                    },
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "sql", "redis"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                    "sql": {"type": "string"},
                    "redis": {"type": "string"},
                },
            },
            "Ready": {
                "type": "object",
                "required": ["status", "sql", "redis", "migrations"],
                "properties": {
                    "status": {"type": "string", "enum": ["ready", "not ready"]},
                    "sql": {"type": "string"},
                    "redis": {"type": "string"},
                    "migrations": {"type": "string"},
                },
            },
        },
    }


def _operations() -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(endpoint, method) -> (OpenAPI path, operation)."""
    ok_ingest = _json(_ref("IngestResult"), "Accepted, or acknowledged as a duplicate")
    heartbeat_ok = _json(
        {
            "type": "object",
            "required": ["ok"],
            "properties": {"ok": {"type": "boolean", "const": True}},
        },
        "Recorded",
    )
    ops: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
        ("api.sightings", "post"): (
            "/api/v1/sightings",
            _signed_operation(
                "Upload one batch of programme sightings",
                "Batch",
                ok_ingest,
                {
                    "422": _error(
                        "The batch_id was already used for different sightings: a retry is "
                        "acknowledged, another batch under the same id never is"
                    ),
                    "429": _error("More batches per minute than this scanner may send"),
                },
            ),
        ),
        ("api.heartbeat", "post"): (
            "/api/v1/heartbeat",
            _signed_operation("Report a scanner's health", "Heartbeat", heartbeat_ok, {}),
        ),
        ("healthz", "get"): (
            "/healthz",
            {
                "summary": "Liveness and store reachability",
                "tags": ["operations"],
                "responses": {
                    "200": _json(_ref("Health"), "Both stores answer"),
                    "503": _json(_ref("Health"), "A store does not answer"),
                },
            },
        ),
        ("ops.readyz", "get"): (
            "/readyz",
            {
                "summary": "Readiness: stores answer and the schema is at the code's head",
                "tags": ["operations"],
                "responses": {
                    "200": _json(_ref("Ready"), "Ready for traffic"),
                    "503": _json(_ref("Ready"), "Not ready (the failing check is named)"),
                },
            },
        ),
        ("ops.metrics", "get"): (
            "/metrics",
            {
                "summary": "Prometheus metrics of this process",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _error("METRICS_TOKEN is set and no matching bearer token was sent"),
                },
            },
        ),
        ("ops.openapi", "get"): (
            "/openapi.json",
            {
                "summary": "This document",
                "tags": ["operations"],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            },
        ),
        ("optin.receipt_key", "get"): (
            "/optin/receipts/key",
            {
                "summary": "Public key that verifies every consent receipt (JWK set)",
                "tags": ["subscribers"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["keys"],
                            "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                        },
                        "JWK set",
                    )
                },
            },
        ),
        ("optin.receipt_json", "get"): (
            "/optin/receipts/{receipt_id}.json",
            {
                "summary": "A signed consent receipt, to its owner only",
                "tags": ["subscribers"],
                "parameters": [
                    {
                        "name": "receipt_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,64}$"},
                    }
                ],
                "responses": {
                    "200": _json({"type": "object"}, "Kantara receipt and its JWS"),
                    "404": _html("Not the signed-in subscriber's receipt (or no sign-in)"),
                    "429": _html("Too many requests"),
                },
            },
        ),
        ("rights.export", "get"): (
            "/me/export.json",
            {
                "summary": "Everything held about the signed-in subscriber",
                "tags": ["subscribers"],
                "responses": {
                    "200": _json({"type": "object"}, "The export"),
                    "302": _redirect("Not signed in: to the sign-in page"),
                    "303": _redirect("Not signed in: to the sign-in page"),
                    "404": _html("Signed in but nothing is held"),
                },
            },
        ),
        ("portal.present_json", "get"): (
            "/portal/venues/{venue_id}/present.json",
            {
                "summary": "Who is present at a venue now (merchant staff of that venue)",
                "tags": ["portal"],
                "parameters": [
                    {
                        "name": "venue_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                    }
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["now", "present"],
                            "properties": {
                                "now": {"type": "number"},
                                "present": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "Present subscribers, under the merchant's pseudonyms",
                    ),
                    "401": _error("Not signed in (a poll has no sign-in page to follow)"),
                    "403": _error("Signed in without access, or the merchant is suspended"),
                    "404": _error("Not one of the merchant's venues"),
                },
            },
        ),
        ("portal.device_pair", "post"): (
            "/portal/device/pair",
            {
                "summary": "A playback device redeems a single-use pairing code for its token",
                "tags": ["portal"],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["code"],
                                "properties": {"code": {"type": "string", "maxLength": 32}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token", "device"],
                            "properties": {
                                "token": {"type": "string"},
                                "device": {"type": "string"},
                            },
                        },
                        "Paired: the device's token (store it; it is shown once)",
                    ),
                    "400": _error("No code, or not a string of at most 32 characters"),
                    "404": _error("Unknown, used or expired code"),
                    "413": _error("The body is larger than the configured limit"),
                    "429": _error("Too many failed codes from this address"),
                },
            },
        ),
    }
    return ops


def build(app: Flask) -> dict[str, Any]:
    """The document for this app: only operations whose route exists."""
    routes = {(rule.endpoint, m.lower()) for rule in app.url_map.iter_rules() for m in rule.methods}
    paths: dict[str, dict[str, Any]] = {}
    for (endpoint, method), (path, op) in _operations().items():
        if (endpoint, method) in routes:
            paths.setdefault(path, {})[method] = {"operationId": endpoint, **op}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Collective Mood store server",
            "version": VERSION,
            "description": (
                "HTTP APIs of the store server: scanners' signed ingest, operations, and the "
                "JSON endpoints of the subscriber and merchant pages. Errors are JSON objects "
                "with an `error` message unless stated otherwise; every response carries "
                "X-Request-Id."
            ),
        },
        "paths": paths,
        "components": _components(app),
    }


def openapi_view() -> ResponseReturnValue:
    """Serve the document (built once per app: routes do not change after start-up)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    doc = app.extensions.get("cm_openapi")
    if doc is None:
        doc = app.extensions["cm_openapi"] = build(app)
    return jsonify(doc)
