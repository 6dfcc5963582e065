"""store_server.db: autocommit reads, the pool gets its connections back transactional, and the
migrations keep what they promise."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from store_server.db import alembic_config, make_engine, reading, upgrade
from store_server.logs import JsonFormatter
from store_server.models import AuditEntry, Base, Scanner, Visit
from store_server.services import create_merchant, create_subscriber, create_venue
from tests.conftest import fresh_database


def _autocommit(dbapi_conn: Any) -> bool:
    """Whether a raw DBAPI connection commits each statement (psycopg, else sqlite3)."""
    if type(dbapi_conn).__module__.startswith("psycopg"):
        return bool(dbapi_conn.autocommit)
    return dbapi_conn.isolation_level is None


def test_reading_autocommits_and_hands_back_a_transactional_connection(app):
    with reading(app) as conn:
        raw = conn.connection.dbapi_connection
        assert _autocommit(raw)
        assert conn.execute(text("select 1")).scalar_one() == 1
    # Back in the pool, ready for the next session's transaction.
    assert not _autocommit(raw)


@contextlib.contextmanager
def _database_at(tmp_path: Path, revision: str) -> Iterator[tuple[str, Engine]]:
    """A fresh database migrated up to `revision` (url, engine); dropped afterwards."""
    url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    engine = make_engine(url, pooled=False)
    try:
        upgrade(url, revision)
        yield url, engine
    finally:
        engine.dispose()
        drop()


@pytest.mark.privacy
@pytest.mark.parametrize("pooled", [True, False], ids=["app", "tools"])
def test_a_failed_statements_logged_error_names_no_bound_value(app, caplog, pooled):
    # SQL error text carried "[parameters: ...]" into the app's "unexpected error" log line: a
    # sign-in e-mail, a never-consented person's directory id. Every engine hides them.
    secret = f"dir:never-consented-{secrets.token_hex(4)}"
    url = app.config["DATABASE_URL"]
    engine = app.extensions["cm_engine"] if pooled else make_engine(url, pooled=False)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as failed:
            conn.execute(text("SELECT id FROM no_such_table WHERE name = :n"), {"n": secret})
    finally:
        if not pooled:
            engine.dispose()
    with caplog.at_level(logging.ERROR, logger="store_server.app"):
        logging.getLogger("store_server.app").error("unexpected error", exc_info=failed.value)
    line = JsonFormatter().format(caplog.records[-1])
    assert "no_such_table" in line  # the statement is still named, for whoever debugs it
    assert secret not in line and secret not in caplog.text


def test_migration_0004_keeps_one_row_per_visit_and_then_refuses_copies(tmp_path) -> None:
    # A database that recorded an exit twice before 0004 (a delivery taken over after its
    # claim lapsed) keeps one visit of it; afterwards the same presence cannot be written twice.
    with _database_at(tmp_path, "0003") as (url, engine):
        with Session(engine) as db:
            merchant = create_merchant(db, "m0004", "Salon", "salon")
            venue = create_venue(db, merchant, "Chair", "site")
            sub = create_subscriber(db, "dir:0004", "ann", [], {}, None)
            db.commit()
            start = datetime(2026, 11, 20, 10, tzinfo=UTC)
            row = {"subscriber_id": sub.id, "merchant_id": merchant.id, "venue_id": venue.id,
                   "zone": "chair-1", "started_at": start,
                   "ended_at": start + timedelta(minutes=30), "dwell_s": 1800.0}  # fmt: skip
            other = {**row, "started_at": start + timedelta(hours=2)}
            db.execute(insert(Visit.__table__), [row, row, row, other])
            db.commit()
        upgrade(url, "head")
        with Session(engine) as db:
            kept = db.scalars(select(Visit.started_at).order_by(Visit.started_at)).all()
            assert len(kept) == 2
            with pytest.raises(IntegrityError):
                db.execute(insert(Visit.__table__), [row])
                db.commit()


def test_the_migrations_build_the_schema_the_models_declare(app) -> None:
    with app.extensions["cm_engine"].connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_migration_0006_says_no_scanner_reports_health_until_it_heartbeats(tmp_path) -> None:
    # Scanners registered before 0006 have sent no heartbeat SQL knows of: each one's next
    # heartbeat tells it (store_server/api.py), so none is assumed either way here.
    with _database_at(tmp_path, "0005") as (url, engine):
        with Session(engine) as db:
            venue = create_venue(db, create_merchant(db, "m0006", "Salon", "salon"), "S", "site")
            db.commit()
            db.execute(
                text(
                    "INSERT INTO scanners (venue_id, name, x, y, secret_enc, created_at) "
                    "VALUES (:v, 'old-scanner', 1.0, 2.0, :s, :at)"
                ),
                {"v": venue.id, "s": b"secret", "at": datetime(2026, 11, 30, tzinfo=UTC)},
            )
            db.commit()
        upgrade(url, "head")
        with Session(engine) as db:
            assert db.execute(select(Scanner.name, Scanner.reports_health)).all() == [
                ("old-scanner", False)
            ]
        command.downgrade(alembic_config(url), "0005")
        columns = {c["name"] for c in inspect(engine).get_columns("scanners")}
        assert "reports_health" not in columns and "name" in columns
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM scanners")).scalars().all() == [
                "old-scanner"
            ]


def test_migration_0005_keeps_one_audit_row_per_device_event_and_then_refuses_copies(
    tmp_path,
) -> None:
    # Copies of a device event (before the journal, a redelivery could write one twice) go;
    # rows without a device (a deleted one's, tombstones) are not compared and all stay.
    with _database_at(tmp_path, "0004") as (url, engine):
        with Session(engine) as db:
            merchant = create_merchant(db, "m0005", "Salon", "salon")
            venue = create_venue(db, merchant, "Chair", "site")
            db.commit()
            db.execute(
                text("INSERT INTO devices (venue_id, name) VALUES (:v, 'speaker')"),
                {"v": venue.id},
            )
            device = db.scalar(text("SELECT id FROM devices"))
            at = datetime(2026, 11, 30, 10, tzinfo=UTC)
            row = {"at": at, "action": "push", "device_id": device, "event_id": "1-0"}
            orphan = {**row, "device_id": None}
            db.execute(
                insert(AuditEntry.__table__),
                [row, row, {**row, "event_id": "2-0"}, orphan, orphan],
            )
            db.commit()
        upgrade(url, "head")
        with Session(engine) as db:
            kept = db.execute(
                select(AuditEntry.device_id, AuditEntry.event_id).order_by(AuditEntry.id)
            ).all()
            assert kept == [(device, "1-0"), (device, "2-0"), (None, "1-0"), (None, "1-0")]
            with pytest.raises(IntegrityError):
                db.execute(insert(AuditEntry.__table__), [row])
                db.commit()
