"""Operations endpoints on a real app: Prometheus metrics that move with real traffic, readiness
that notices an old schema, request ids on every response and log line."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from store_server import outbox
from store_server.app import create_app
from store_server.db import sessions, upgrade
from store_server.drift_report import venue_drift
from store_server.models import Device
from store_server.ops import get_metrics
from store_server.ops.hooks import HEADER
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.conftest import fresh_database, make_config
from tests.faults.support import (
    Stack,
    batch_body,
    eid_rows,
    make_stack,
    signed,
    stranger_rows,
)

SCANNER = "demo-salon-scanner-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A store server of this module's own, so its counters start at zero."""
    s = make_stack(tmp_path_factory.mktemp("ops"))
    yield s
    s.close()


@pytest.fixture
def client(stack: Stack):  # type: ignore[no-untyped-def]
    """HTTP test client of the module's app."""
    return stack.app.test_client()


def scrape(client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    """/metrics parsed: (sample name, sorted labels) -> value."""
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.data
    assert resp.content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.data.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent (a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def post_batch(stack: Stack, client, rows: list[dict[str, Any]], body: bytes | None = None):  # type: ignore[no-untyped-def]
    """Sign and post one batch."""
    body = body or batch_body(rows)
    headers = signed(SCANNER, stack.secret(SCANNER), body)
    return client.post("/api/v1/sightings", data=body, headers=headers)


# --- metrics --------------------------------------------------------------------------------


def test_sighting_counters_follow_traffic(stack, client):
    before = scrape(client)
    now = time.time()
    rows = eid_rows(stack.world.emitters["alice"], now, 3) + stranger_rows(now - 2, 2)
    body = batch_body(rows)
    assert post_batch(stack, client, rows, body).get_json()["duplicate"] is False
    assert post_batch(stack, client, rows, body).get_json()["duplicate"] is True
    bad = post_batch(stack, client, [{"ts": "x"}])
    assert bad.status_code == 400
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cm_sightings_received_total") == 5
    assert delta("cm_sighting_batches_total", outcome="accepted") == 1
    assert delta("cm_sighting_batches_total", outcome="duplicate") == 1
    assert delta("cm_sighting_batches_total", outcome="refused") == 1
    # Two strangers, read back from the Redis counters every worker shares.
    assert delta("cm_sightings_dropped_total") == 2
    assert delta("cm_ingest_batch_seconds_count") == 1
    assert 0 < delta("cm_ingest_batch_seconds_sum") < 5
    assert delta("cm_http_requests_total", endpoint="api.sightings", status="200") == 2
    assert delta("cm_http_requests_total", endpoint="api.sightings", status="400") == 1


def test_resolved_sightings_counted(stack, client):
    before = value(scrape(client), "cm_sightings_resolved_total")
    rows = eid_rows(stack.world.emitters["alice"], time.time(), 3)
    rows += stranger_rows(time.time() - 1, 1)
    assert post_batch(stack, client, rows).status_code == 200
    assert value(scrape(client), "cm_sightings_resolved_total") - before == 3


def test_probing_unknown_paths_shares_one_label(stack, client):
    for i in range(5):
        assert client.get(f"/wp-admin/{i}.php").status_code == 404
    samples = scrape(client)
    assert value(samples, "cm_http_requests_total", endpoint="unmatched", status="404") >= 5
    assert not any("wp-admin" in str(k) for k in samples)


def test_heartbeat_metrics_show_scanner_health(stack, client):
    doc = {"queue_depth": 7, "adapter": "down", "uptime_s": 3}
    body = json.dumps(doc).encode()
    resp = client.post(
        "/api/v1/heartbeat", data=body, headers=signed(SCANNER, stack.secret(SCANNER), body)
    )
    assert resp.status_code == 200
    samples = scrape(client)
    assert value(samples, "cm_scanner_heartbeats_total", scanner=SCANNER) >= 1
    assert value(samples, "cm_scanner_queue_depth", scanner=SCANNER) == 7
    assert value(samples, "cm_scanner_adapter_up", scanner=SCANNER) == 0
    assert 0 <= value(samples, "cm_scanner_heartbeat_age_seconds", scanner=SCANNER) < 5
    # A scanner that never sent a heartbeat has no age at all, rather than a made-up one.
    assert ("cm_scanner_heartbeat_age_seconds", (("scanner", "demo-car-scanner"),)) not in samples
    # Nor has one whose report Redis lost, from the jobs' stand-in (not a heartbeat heard).
    r, keys = get_redis(stack.app), get_keys(stack.app)
    car = get_topology(stack.app).scanner("demo-car-scanner").id
    r.hset(keys.scanner_health(car), mapping={"at": time.time(), "restored": "1"})
    try:
        samples = scrape(client)
        assert ("cm_scanner_adapter_up", (("scanner", "demo-car-scanner"),)) not in samples
        assert ("cm_scanner_heartbeat_age_seconds", (("scanner", "demo-car-scanner"),)) not in (
            samples
        )
    finally:
        r.delete(keys.scanner_health(car))


def test_scanner_drift_learnt_by_live_tracking_is_a_gauge(stack, client):
    """The offsets Bob's tracker learnt from real signed batches are the salon scanners' drift
    gauges (with any other tracker's); a scanner nobody was tracked by has none."""
    other = "demo-salon-scanner-2"
    start = time.time() + 1  # after anything this module posted for the salon
    rows = {
        SCANNER: eid_rows(stack.world.emitters["bob"], start, 20, -50.0),
        other: eid_rows(stack.world.emitters["bob"], start, 20, -70.0),
    }
    for second in range(20):
        for name, mine in rows.items():
            body = batch_body(mine[second : second + 1])
            headers = signed(name, stack.secret(name), body)
            assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    samples = scrape(client)
    venue = get_topology(stack.app).scanner(SCANNER).venue_id
    learnt = venue_drift(stack.app, venue)
    assert set(learnt) == {SCANNER, other}
    for name, (db, n) in learnt.items():
        assert value(samples, "cm_scanner_drift_db", scanner=name) == pytest.approx(db)
        assert value(samples, "cm_scanner_drift_emitters", scanner=name) == n >= 1
    assert any(abs(db) > 0.5 for db, _ in learnt.values())
    assert ("cm_scanner_drift_db", (("scanner", "demo-car-scanner"),)) not in samples


def test_outbox_depth_and_connected_devices_read_at_scrape_time(stack, client):
    app = stack.app
    with sessions(app)() as db:
        device = db.scalar(select(Device).where(Device.name == "demo-chair-2-speaker"))
        device_id = device.id
    token = stack.world.devices["demo-chair-2-speaker"]
    r, keys = get_redis(app), get_keys(app)
    base = value(scrape(client), "cm_outbox_depth")
    events = [(device_id, {"type": "revoke", "subscriber": "p", "zone": "z"}) for _ in range(3)]
    ids = outbox.append_many(r, keys, events, 1000, 60)
    samples = scrape(client)
    assert value(samples, "cm_outbox_depth") - base == 3
    assert value(samples, "cm_outbox_max_depth") >= 3
    assert value(samples, "cm_connected_devices") == 0
    # Audit entries and visits SQL refused wait in the journal: an operator sees them pile up.
    assert value(samples, "cm_journal_backlog") == 0
    r.xadd(keys.journal(), {"s": 1, "v": "{}"})
    assert value(scrape(client), "cm_journal_backlog") == 1
    r.delete(keys.journal())
    sio = app.extensions["socketio"].test_client(app, namespace="/device", auth={"token": token})
    try:
        assert sio.is_connected("/device")
        assert value(scrape(client), "cm_connected_devices") == 1
    finally:
        sio.disconnect(namespace="/device")
    assert value(scrape(client), "cm_connected_devices") == 0
    r.xdel(keys.outbox(device_id), *ids)
    assert value(scrape(client), "cm_outbox_depth") == base


def test_report_jobs_counter_is_there_for_the_jobs(stack, client):
    get_metrics(stack.app).report_jobs.labels("ok").inc()
    assert value(scrape(client), "cm_report_jobs_total", status="ok") == 1


def test_each_app_has_its_own_registry(stack, client, tmp_path):
    other = create_app(make_config(tmp_path, stack.app.config["DATABASE_URL"], None))
    try:
        get_metrics(other).report_jobs.labels("failed").inc()
        assert value(scrape(client), "cm_report_jobs_total", status="failed") == 0
    finally:
        other.extensions["cm_engine"].dispose()


def test_metrics_token_when_configured(stack, client, monkeypatch):
    monkeypatch.setitem(stack.app.config, "METRICS_TOKEN", "s3cret-token")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scrape(client, Authorization="Bearer s3cret-token")


# --- readiness ------------------------------------------------------------------------------


def test_readyz_ready(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "sql": "ok", "redis": "ok", "migrations": "ok"}


def test_readyz_refuses_a_schema_behind_the_code(tmp_path):
    url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    upgrade(url, "0001")
    app = create_app(make_config(tmp_path, url, os.environ.get("REDIS_URL") or None))
    try:
        resp = app.test_client().get("/readyz")
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        doc = resp.get_json()
        assert doc["status"] == "not ready" and doc["sql"] == "ok" and doc["redis"] == "ok"
        assert doc["migrations"].startswith("at 0001, head is ")
        # Liveness is a different question: the process is fine, it only must not get traffic.
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        app.extensions["cm_engine"].dispose()
        drop()


def test_readyz_refuses_an_unmigrated_database(tmp_path):
    url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    app = create_app(make_config(tmp_path, url, os.environ.get("REDIS_URL") or None))
    try:
        resp = app.test_client().get("/readyz")
        assert resp.status_code == 503
        assert "migrated" in resp.get_json()["migrations"]
    finally:
        app.extensions["cm_engine"].dispose()
        drop()


# --- request ids and logs -------------------------------------------------------------------


def test_every_response_has_a_request_id(client):
    ids = set()
    for path in ("/healthz", "/readyz", "/nope", "/metrics"):
        rid = client.get(path).headers[HEADER]
        assert len(rid) == 32
        ids.add(rid)
    assert len(ids) == 4
    refused = client.post("/api/v1/sightings", data=b"{}")
    assert refused.status_code == 401 and refused.headers[HEADER]


def test_plain_incoming_request_id_is_kept_others_replaced(client):
    assert client.get("/healthz", headers={HEADER: "edge-proxy-1234"}).headers[HEADER] == (
        "edge-proxy-1234"
    )
    for bad in ("x", "a b c d e f g h", "<script>alert(1)</script>", "z" * 65):
        assert client.get("/healthz", headers={HEADER: bad}).headers[HEADER] != bad


def test_log_lines_carry_the_request_id_and_no_raw_path(stack, client, caplog):
    caplog.set_level(logging.INFO)
    body = batch_body(stranger_rows(time.time() - 1, 1))
    resp = client.post(
        "/api/v1/sightings",
        data=body,
        headers={**signed(SCANNER, stack.secret(SCANNER), body), HEADER: "trace-abcdef12"},
    )
    assert resp.status_code == 200
    access = [r for r in caplog.records if r.name == "store_server.access"]
    assert access and access[-1].request_id == "trace-abcdef12"
    assert access[-1].route == "/api/v1/sightings" and access[-1].status == 200
    client.get("/optin/not-a-real-token-0123456789")
    last = [r for r in caplog.records if r.name == "store_server.access"][-1]
    assert "not-a-real-token" not in json.dumps(last.__dict__, default=str)


def test_request_id_on_records_logged_inside_a_request(stack, caplog):
    caplog.set_level(logging.INFO)
    with stack.app.test_request_context("/healthz"):
        stack.app.preprocess_request()
        logging.getLogger("store_server.somewhere").info("inside")
        rid = flask.g.request_id
    logging.getLogger("store_server.somewhere").info("outside")
    inside = [r for r in caplog.records if r.getMessage() == "inside"]
    outside = [r for r in caplog.records if r.getMessage() == "outside"]
    assert inside[0].request_id == rid
    assert not hasattr(outside[0], "request_id")


def test_security_headers_on_every_kind_of_response(stack, client):
    responses = [
        client.get("/healthz"),
        client.get("/metrics"),
        client.get("/openapi.json"),
        client.get("/nope"),
        client.get("/api/v1/sightings"),
        client.post("/api/v1/sightings", data=b"{}"),
    ]
    for resp in responses:
        assert resp.headers["X-Content-Type-Options"] == "nosniff", resp.request.path
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
