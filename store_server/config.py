"""Configuration read from the environment, with embedded defaults for a laptop demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var"


def normalise_db_url(url: str) -> str:
    """Pick the psycopg 3 driver for bare postgresql:// URLs, the form operators write."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Flask config mapping built from environment variables (see .env.example)."""
    e = os.environ if env is None else env
    var = Path(e.get("CM_VAR_DIR", str(VAR)))
    return {
        "SECRET_KEY": e.get("SECRET_KEY", "dev-only-not-secret"),
        # Separate from SECRET_KEY so that session-cookie rotation does not orphan encrypted keys.
        "DATA_KEY": e.get("DATA_KEY", "dev-only-data-key"),
        "DATABASE_URL": normalise_db_url(e.get("DATABASE_URL", f"sqlite:///{var / 'cmood.db'}")),
        "REDIS_URL": e.get("REDIS_URL") or None,
        "REDIS_EMBEDDED_PATH": str(var / "redis.db"),
        "REDIS_PREFIX": e.get("REDIS_PREFIX", "cm:"),
        "SOCKETIO_MESSAGE_QUEUE": e.get("SOCKETIO_MESSAGE_QUEUE") or None,
        # threading for tests and the demo; gevent in production (measured: README, issue 5).
        "SOCKETIO_ASYNC_MODE": e.get("SOCKETIO_ASYNC_MODE", "threading"),
        "VAR_DIR": str(var),
        "INGEST_MAX_SKEW_S": int(e.get("INGEST_MAX_SKEW_S", "300")),
        "INGEST_MAX_BATCH": int(e.get("INGEST_MAX_BATCH", "1000")),
        "INGEST_MAX_BODY": int(e.get("INGEST_MAX_BODY", str(256 * 1024))),
        # Batches per scanner per minute: a daemon sends about one a second, and a ten-minute
        # backlog drains in seconds under this; 0 = no limit.
        "INGEST_RATE_PER_MIN": int(e.get("INGEST_RATE_PER_MIN", "6000")),
        "BATCH_ID_TTL_S": int(e.get("BATCH_ID_TTL_S", str(7 * 86400))),
        "RESOLVER_REFRESH_S": float(e.get("RESOLVER_REFRESH_S", "60")),
        "RESOLVER_WINDOW": int(e.get("RESOLVER_WINDOW", "2")),
        "SWEEP_INTERVAL_S": float(e.get("SWEEP_INTERVAL_S", "0.5")),
        "PUSH_TTL_S": int(e.get("PUSH_TTL_S", "3600")),
        "OUTBOX_MAXLEN": int(e.get("OUTBOX_MAXLEN", "1000")),
        # Above the number of requests a worker serves at once: a smaller pool makes every burst
        # open and close overflow connections, measured as the largest cost of a push under load.
        "SQL_POOL_SIZE": int(e.get("SQL_POOL_SIZE", "16")),
        "BACKGROUND_JOBS": e.get("BACKGROUND_JOBS", "1") == "1",
        "LOG_LEVEL": e.get("LOG_LEVEL", "INFO"),
        # When set, /metrics requires `Authorization: Bearer <token>`.
        "METRICS_TOKEN": e.get("METRICS_TOKEN") or None,
    }
