"""Configuration read from the environment, with embedded defaults for a laptop demo.

Every value is checked here, once, at start: a typo or a nonsense number (a sweep interval of 0,
NaN seconds) raises ConfigError naming the variable, instead of a traceback at start or a
background loop failing every round long after.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var"
# What Flask-SocketIO (python-engineio) accepts as async_mode.
ASYNC_MODES = ("threading", "eventlet", "gevent", "gevent_uwsgi")
# Bounds of what is handed to Redis as an expiry: longer than ten years is a typo, and a value
# past Redis's range would make every push or batch fail instead of the start.
MAX_TTL_S = 10 * 365 * 86400
# The jobs loop waits this long between rounds: past an hour exits would wait for an hour.
MAX_SWEEP_S = 3600.0
MIN_SWEEP_S = 0.01  # the sweep lock lives 0.9 interval in whole ms: never 0 from here up


class ConfigError(ValueError):
    """A configuration variable holds a value the server cannot run with."""


def ensure_dir(path: Path, what: str) -> None:
    """Create a directory and its parents; raises ConfigError naming it when that fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # A file in the way gives FileExistsError or NotADirectoryError, whose own words
        # ("File exists") do not say which path is the file: name it.
        file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{file} is not a directory" if file else (e.strerror or str(e))
        raise ConfigError(f"cannot create {what} {path}: {why}") from None


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    minimum: int,
    maximum: int | None = None,
    what: str = "a whole number",
) -> int:
    """The variable as an int within [minimum, maximum], or its default when unset."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be {what} {_bounds(minimum, maximum)}, got {raw!r}")
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float,
    maximum: float | None = None,
    *,
    above: bool = False,
    what: str = "a number of seconds",
) -> float:
    """The variable as a finite float >= minimum (> minimum when `above`), up to maximum."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    low_ok = value > minimum if above else value >= minimum
    if not (math.isfinite(value) and low_ok and (maximum is None or value <= maximum)):
        bounds = f"> {_num(minimum)}" if above else _bounds(minimum, maximum)
        raise ConfigError(f"{name} must be {what} {bounds}, got {raw!r}")
    return value


def _bounds(minimum: float, maximum: float | None) -> str:
    if maximum is None:
        return f">= {_num(minimum)}"
    return f"between {_num(minimum)} and {_num(maximum)}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """The variable when it is one of `choices`, or its default when unset."""
    value = env.get(name, default)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def log_level(env: Mapping[str, str]) -> str:
    """LOG_LEVEL as a level name logging knows, upper case (it accepts no other spelling)."""
    value = env.get("LOG_LEVEL", "INFO")
    if value.upper() not in logging.getLevelNamesMapping():
        names = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ConfigError(f"LOG_LEVEL must be a logging level name ({names}), got {value!r}")
    return value.upper()


def redis_url(env: Mapping[str, str]) -> str | None:
    """REDIS_URL when it is a URL the Redis client reads; None (embedded Redis) when unset."""
    url = env.get("REDIS_URL") or None
    if url is None:
        return None
    # Imported here: the config module is read by tools that never talk to Redis.
    from redis.connection import parse_url

    from store_server.redis_store import SENTINEL_SCHEME, parse_sentinel_url

    try:
        if url.startswith(f"{SENTINEL_SCHEME}://"):
            parse_sentinel_url(url)
        else:
            parse_url(url)
    except ValueError as e:
        # The client's reason names a scheme, a port or an option, never the password.
        raise ConfigError(
            "REDIS_URL must be a redis://, rediss://, unix:// or redis+sentinel:// URL such as "
            f"redis://127.0.0.1:6379/0 ({e})"
        ) from None
    return url


def public_base_url(env: Mapping[str, str]) -> str | None:
    """PUBLIC_BASE_URL: the absolute http(s) URL phones reach the store at, which opt-in QR codes
    encode (None: the host each request came in by)."""
    raw = (env.get("PUBLIC_BASE_URL") or "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unreadable port or bracketed host
        ok = False
    if not ok or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            "PUBLIC_BASE_URL must be an absolute http:// or https:// URL such as "
            f"https://mood.example.com, got {raw!r}"
        )
    return raw.rstrip("/")


def database_url(env: Mapping[str, str], var: Path) -> str:
    """DATABASE_URL normalised for psycopg 3, when SQLAlchemy can read it and load its dialect."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    url = normalise_db_url(env.get("DATABASE_URL", f"sqlite:///{var / 'cmood.db'}"))
    try:
        make_url(url).get_dialect()
    except NoSuchModuleError:
        why = "unknown database or driver"
    except ArgumentError:
        why = "not a URL"
    except ValueError:  # SQLAlchemy reads the port with int()
        why = "unreadable port"
    else:
        return url
    # The value itself is left out: it may hold a password.
    raise ConfigError(
        "DATABASE_URL must be a database URL such as postgresql://USER:PASSWORD@HOST:5432/DB"
        f" or sqlite:///PATH ({why})"
    )


def normalise_db_url(url: str) -> str:
    """Pick the psycopg 3 driver for bare postgresql:// URLs, the form operators write."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flask config mapping built from environment variables (see .env.example).

    Raises ConfigError, naming the variable and what it must be, for a value it cannot use.
    """
    e = os.environ if env is None else env
    var = Path(e.get("CM_VAR_DIR", str(VAR)))
    return {
        "SECRET_KEY": e.get("SECRET_KEY", "dev-only-not-secret"),
        # Separate from SECRET_KEY so that session-cookie rotation does not orphan encrypted keys.
        "DATA_KEY": e.get("DATA_KEY", "dev-only-data-key"),
        "DATABASE_URL": database_url(e, var),
        "REDIS_URL": redis_url(e),
        "REDIS_EMBEDDED_PATH": str(var / "redis.db"),
        "REDIS_PREFIX": e.get("REDIS_PREFIX", "cm:"),
        "SOCKETIO_MESSAGE_QUEUE": e.get("SOCKETIO_MESSAGE_QUEUE") or None,
        # threading for tests and the demo; gevent in production (measured: README, issue 5).
        "SOCKETIO_ASYNC_MODE": env_choice(e, "SOCKETIO_ASYNC_MODE", "threading", ASYNC_MODES),
        "VAR_DIR": str(var),
        "INGEST_MAX_SKEW_S": env_int(
            e, "INGEST_MAX_SKEW_S", 300, 1, MAX_TTL_S, "a whole number of seconds"
        ),
        # How far after its batch's signed send time a sighting may be stamped: none is heard
        # after it is sent, so beyond the send time's rounding such a row is dropped (a clock
        # stepped back between hearing and sending would keep a visitor present minutes on).
        "INGEST_ROW_AHEAD_S": env_float(e, "INGEST_ROW_AHEAD_S", 2.0, 0.0, 3600.0),
        "INGEST_MAX_BATCH": env_int(e, "INGEST_MAX_BATCH", 1000, 1, what="a number of sightings"),
        "INGEST_MAX_BODY": env_int(e, "INGEST_MAX_BODY", 256 * 1024, 1, what="a number of bytes"),
        # Batches per scanner per minute: a daemon sends about one a second, and a ten-minute
        # backlog drains in seconds under this; 0 = no limit.
        "INGEST_RATE_PER_MIN": env_int(
            e, "INGEST_RATE_PER_MIN", 6000, 0, what="a number of batches (0: no limit)"
        ),
        "BATCH_ID_TTL_S": env_int(
            e, "BATCH_ID_TTL_S", 7 * 86400, 1, MAX_TTL_S, "a whole number of seconds"
        ),
        "RESOLVER_REFRESH_S": env_float(e, "RESOLVER_REFRESH_S", 60.0, 0.0, above=True),
        "RESOLVER_WINDOW": env_int(e, "RESOLVER_WINDOW", 2, 0, what="a number of EID periods"),
        "SWEEP_INTERVAL_S": env_float(e, "SWEEP_INTERVAL_S", 0.5, MIN_SWEEP_S, MAX_SWEEP_S),
        "PUSH_TTL_S": env_int(e, "PUSH_TTL_S", 3600, 1, MAX_TTL_S, "a whole number of seconds"),
        "OUTBOX_MAXLEN": env_int(e, "OUTBOX_MAXLEN", 1000, 1, what="a number of events"),
        # How long a worker that stopped renewing its claim (killed, cut off) still has its
        # devices shown online; it renews a third of this apart while it holds device sockets.
        "WORKER_ALIVE_TTL_S": env_int(
            e, "WORKER_ALIVE_TTL_S", 30, 3, 3600, "a whole number of seconds"
        ),
        # Above the number of requests a worker serves at once: a smaller pool makes every burst
        # open and close overflow connections, measured as the largest cost of a push under load.
        "SQL_POOL_SIZE": env_int(e, "SQL_POOL_SIZE", 16, 1, what="a number of connections"),
        # Read by wsgi.build_app; checked here so that a typo stops every entry point in one line.
        "PROXY_HOPS": env_int(e, "PROXY_HOPS", 0, 0, what="a number of proxies"),
        # What the opt-in QR codes encode (portal screen and /optin/<token>/qr.*).
        "PUBLIC_BASE_URL": public_base_url(e),
        "BACKGROUND_JOBS": e.get("BACKGROUND_JOBS", "1") == "1",
        "LOG_LEVEL": log_level(e),
        # When set, /metrics requires `Authorization: Bearer <token>`.
        "METRICS_TOKEN": e.get("METRICS_TOKEN") or None,
    }
