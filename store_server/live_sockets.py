"""Which live Socket.IO sessions belong to whom (a device, a staff member), kept in Redis so that
any worker can close them: a revoke, a sign-out or a suspension is served by one worker while
the socket may be held by another, and the disconnect travels by the message queue."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import redis
from flask import Flask

from store_server.redis_store import get_redis

# Longer than any connection is expected to last without reconnecting; ids of sockets that died
# with their worker are dropped with the set.
SOCKETS_TTL_S = 7 * 86400


def remember(r: redis.Redis, key: str, sid: str) -> None:
    """Record a socket that has just connected under its owner's set (Keys.*_sockets)."""
    r.pipeline(transaction=False).sadd(key, sid).expire(key, SOCKETS_TTL_S).execute()


def forget(r: redis.Redis, key: str, sid: str) -> None:
    """Drop a socket that has disconnected from its owner's set; a stale id left behind (Redis
    unreachable now) is harmless: python-socketio ignores ids of sockets already gone."""
    with contextlib.suppress(redis.RedisError):
        r.srem(key, sid)


def close(app: Flask, keys: Iterable[str], local: Iterable[str], namespace: str) -> int:
    """Disconnect every socket recorded under these owners' sets, on whichever worker holds it,
    and this worker's `local` ones even if Redis lost the sets (restarted empty); returns how
    many were told. Raises RedisError, having closed nothing, when the sets cannot be read."""
    names = list(keys)
    sids = set(local)
    if names:
        pipe = get_redis(app).pipeline(transaction=False)
        for name in names:
            pipe.smembers(name)
            pipe.delete(name)
        sids |= {sid for members in pipe.execute()[::2] for sid in members}
    server = app.extensions["socketio"].server
    for sid in sids:
        server.disconnect(sid, namespace=namespace)
    return len(sids)
