"""Which live Socket.IO sessions belong to whom (a device, a staff member), kept in Redis so that
any worker can close them: a revoke, a sign-out or a suspension is served by one worker while
the socket may be held by another, and the disconnect travels by the message queue."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence

import redis
from flask import Flask

from store_server.redis_store import get_keys, get_redis

# Longer than any connection is expected to last without reconnecting; ids of sockets that died
# with their worker are dropped at their owner's next connect, or with the hash.
SOCKETS_TTL_S = 7 * 86400
# This worker's own records of who is connected (devices, staff), by socket id.
HELD = ("cm_connected_devices", "cm_portal_connected")


class Liveness:
    """This worker's claim, renewed while it holds sockets, that it still runs: another worker
    then tells a socket recorded by a live worker from one left behind by a worker that was
    killed (its disconnect handlers never ran) or cut off from Redis."""

    def __init__(self, app: Flask, holds: Callable[[], bool]) -> None:
        self.app = app
        self.token = secrets.token_hex(8)
        self.key = get_keys(app).worker_alive(self.token)
        self.ttl_s = int(app.config["WORKER_ALIVE_TTL_S"])
        self._holds = holds
        self._lock = threading.Lock()
        self._running = False

    def claim(self, pipe: redis.client.Pipeline) -> None:
        """Queue the claim on `pipe` (with the socket it is made for)."""
        pipe.set(self.key, 1, ex=self.ttl_s)

    def keep_up(self) -> None:
        """Renew the claim in the background for as long as this worker holds sockets."""
        with self._lock:
            if self._running:
                return
            self._running = True
        self.app.extensions["socketio"].start_background_task(self._renew)

    def _renew(self) -> None:
        # One task per worker, and only while it holds sockets: an idle worker (or a test's
        # app) runs none; the holds check and the flag change under one lock, so a socket
        # connecting as the task ends starts the next one.
        socketio = self.app.extensions["socketio"]
        while True:
            with self._lock:
                if not self._holds():
                    self._running = False
                    return
            with contextlib.suppress(redis.RedisError):  # renewed at the next beat
                get_redis(self.app).set(self.key, 1, ex=self.ttl_s)
            socketio.sleep(self.ttl_s / 3)


def this_worker(app: Flask) -> Liveness:
    """This worker's liveness (one per app), renewed while it holds any live socket."""
    found = app.extensions.get("cm_worker_liveness")
    if found is None:
        made = Liveness(app, lambda: any(app.extensions.get(name) for name in HELD))
        found = app.extensions.setdefault("cm_worker_liveness", made)
    return found


def remember(app: Flask, key: str, sid: str) -> None:
    """Record a socket that has just connected under its owner's hash (Keys.*_sockets), with
    the worker holding it; drops the owner's sockets recorded by workers no longer running
    (killed, their disconnect handlers never ran), so a hash does not grow by one id per
    worker restart. Raises RedisError."""
    worker, r = this_worker(app), get_redis(app)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.hset(key, sid, worker.token)
    pipe.expire(key, SOCKETS_TTL_S)
    worker.claim(pipe)
    before: dict[str, str] = pipe.execute()[0]
    worker.keep_up()
    others = {s: t for s, t in before.items() if t != worker.token}
    if others:
        tokens = sorted(set(others.values()))
        pipe = r.pipeline(transaction=False)
        for token in tokens:
            pipe.exists(get_keys(app).worker_alive(token))
        dead = {t for t, up in zip(tokens, pipe.execute(), strict=True) if not up}
        stale = [s for s, t in others.items() if t in dead]
        if stale:
            r.hdel(key, *stale)


def forget(r: redis.Redis, key: str, sid: str) -> None:
    """Drop a socket that has disconnected from its owner's hash; a stale id left behind (Redis
    unreachable now) is harmless: python-socketio ignores ids of sockets already gone."""
    with contextlib.suppress(redis.RedisError):
        r.hdel(key, sid)


def online(app: Flask, keys: Sequence[str]) -> list[bool]:
    """For each owner's hash, whether it holds a socket on a worker still running; two round
    trips whatever the number of owners. Raises RedisError."""
    r = get_redis(app)
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hvals(key)
    holders = [set(values) for values in pipe.execute()]
    workers = sorted(set().union(*holders)) if holders else []
    pipe = r.pipeline(transaction=False)
    for token in workers:
        pipe.exists(get_keys(app).worker_alive(token))
    alive = {token for token, up in zip(workers, pipe.execute(), strict=True) if up}
    return [bool(held & alive) for held in holders]


def close(app: Flask, keys: Iterable[str], local: Iterable[str], namespace: str) -> int:
    """Disconnect every socket recorded under these owners' sets, on whichever worker holds it,
    and this worker's `local` ones even if Redis lost the sets (restarted empty); returns how
    many were told. Raises RedisError, having closed nothing, when the sets cannot be read."""
    names = list(keys)
    sids = set(local)
    if names:
        pipe = get_redis(app).pipeline(transaction=False)
        for name in names:
            pipe.hkeys(name)
            pipe.delete(name)
        sids |= {sid for members in pipe.execute()[::2] for sid in members}
    server = app.extensions["socketio"].server
    for sid in sids:
        server.disconnect(sid, namespace=namespace)
    return len(sids)
