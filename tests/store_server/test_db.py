"""store_server.db: autocommit reads, and the pool gets its connections back transactional."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from store_server.db import reading


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
