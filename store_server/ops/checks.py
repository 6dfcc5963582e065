"""Readiness checks shared by /readyz and the doctor: each returns (ok, detail) and never raises;
and the one line the command-line tools print for a store that fails them."""

from __future__ import annotations

from functools import lru_cache

import redis
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from store_server.db import alembic_config

Check = tuple[bool, str]
# What to run when a database lacks the schema (the doctor's advice too).
MIGRATE = "run the migrations (store_server.db.upgrade, the `migrate` job of docker/compose.yaml)"


@lru_cache(maxsize=1)
def migration_heads() -> frozenset[str]:
    """The head revisions of the migrations shipped with this code (read once per process)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def sql_ping(engine: Engine) -> Check:
    """The database answers a trivial query."""
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        return True, "ok"
    except Exception as e:  # reported, never raised: callers turn it into 503 or advice
        return False, f"error: {type(e).__name__}"


def migrations_at_head(engine: Engine) -> Check:
    """The database schema is at the code's migration head."""
    try:
        with engine.connect() as c:
            current = {row[0] for row in c.execute(text("SELECT version_num FROM alembic_version"))}
    except Exception as e:
        return False, f"error: {type(e).__name__} (is the database migrated?)"
    heads = migration_heads()
    if current == heads:
        return True, "ok"
    have = ",".join(sorted(current)) or "none"
    return False, f"at {have}, head is {','.join(sorted(heads))}"


def redis_ping(client: redis.Redis) -> Check:
    """Redis answers PING."""
    try:
        client.ping()
        return True, "ok"
    except Exception as e:
        return False, f"error: {type(e).__name__}"


def failure_line(exc: BaseException) -> str:
    """One line naming a store failure, for a command line: the driver's own first line rather
    than SQLAlchemy's statement, parameters and background link, and what to check or run."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    words = str(cause).strip().splitlines()
    line = f"{type(cause).__name__}: {words[0]}" if words else type(cause).__name__
    if isinstance(exc, redis.RedisError):
        return f"Redis failed: {line} (check REDIS_URL)"
    if isinstance(exc, SQLAlchemyError):
        text_ = str(cause)
        if "no such table" in text_ or ("relation" in text_ and "does not exist" in text_):
            return f"the database has no schema ({line}): {MIGRATE}"
        return f"the database failed: {line} (check DATABASE_URL)"
    return line
