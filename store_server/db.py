"""SQL engine and sessions bound to the Flask app context, and migrations through Alembic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from store_server.config import ensure_dir

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# A pooled connection used this recently is taken as alive without a ping: under load every
# checkout would otherwise cost a round trip of its own (SQLAlchemy's pool_pre_ping pings on
# each one). A connection that died meanwhile fails its statement, the pool is invalidated,
# and the next checkout connects afresh.
PING_IDLE_S = 1.0


def make_engine(url: str, *, pooled: bool = True, pool_size: int = 10) -> Engine:
    """Engine with the settings each backend needs (SQLite: foreign keys, WAL, threads)."""
    # A failed statement's error text then names its SQL but not its bound values: those are
    # e-mails, directory ids and other people's identifiers, and the text reaches the logs.
    extra: dict = {"hide_parameters": True}
    if not pooled:
        extra["poolclass"] = NullPool
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            ensure_dir(Path(path).parent, "the SQLite database's directory")
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **extra
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    if not pooled:
        return create_engine(url, **extra)
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, **extra)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, only for connections idle for PING_IDLE_S or more."""

    @event.listens_for(engine, "checkin")
    def _used(_dbapi_conn: Any, record: Any) -> None:
        record.info["used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get("used")
        if used is None or time.monotonic() - used < PING_IDLE_S:
            return  # just connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(str(e)) from e


def init_app(app: Flask) -> None:
    """Create the engine once per app and close the request's session at teardown."""
    engine = make_engine(app.config["DATABASE_URL"], pool_size=app.config.get("SQL_POOL_SIZE", 10))
    app.extensions["cm_engine"] = engine
    app.extensions["cm_sessions"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_close_db)


def sessions(app: Flask | None = None) -> sessionmaker[Session]:
    """The session factory, for background jobs that run outside a request."""
    return (app or current_app).extensions["cm_sessions"]


@contextmanager
def reading(app: Flask | None = None) -> Iterator[Connection]:
    """A connection in autocommit for reads that need no transaction: one round trip per query,
    instead of BEGIN, the query and a ROLLBACK when it goes back to the pool."""
    with (app or current_app).extensions["cm_engine"].connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def get_db() -> Session:
    """The SQL session of the current app context."""
    if "db" not in g:
        g.db = sessions()()
    return g.db


def _close_db(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` on the database at `url`."""
    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str) -> AlembicConfig:
    """Alembic configuration pointing at our migrations folder and the given database."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
