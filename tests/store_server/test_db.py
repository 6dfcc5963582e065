"""store_server.db: autocommit reads, the pool gets its connections back transactional, and the
migrations keep what they promise."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store_server.db import make_engine, reading, upgrade
from store_server.models import Visit
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


def test_migration_0004_keeps_one_row_per_visit_and_then_refuses_copies(tmp_path) -> None:
    # A database that recorded an exit twice before 0004 (a delivery taken over after its
    # claim lapsed) keeps one visit of it; afterwards the same presence cannot be written twice.
    url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    engine = make_engine(url, pooled=False)
    try:
        upgrade(url, "0003")
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
    finally:
        engine.dispose()
        drop()
