"""Health endpoint and store wiring."""

from sqlalchemy import inspect


def test_healthz_reports_both_stores(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "sql": "ok", "redis": "ok"}


def test_migrations_create_every_table(app):
    names = set(inspect(app.extensions["cm_engine"]).get_table_names())
    assert {
        "merchants",
        "staff_users",
        "venues",
        "zones",
        "scanners",
        "devices",
        "subscribers",
        "emitter_keys",
        "consents",
        "visits",
        "audit_log",
        "alembic_version",
    } <= names


def test_unknown_route_is_json_404(client):
    resp = client.get("/api/v1/nope")
    assert resp.status_code == 404
    assert "error" in resp.get_json()
