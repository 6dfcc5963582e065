"""Helpers shared by the ops, ingest API and fault tests: an isolated store server on its own
database and Redis prefix, signed posts, snapshots of everything a request could have written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis as redis_lib
from flask import Flask
from sqlalchemy import inspect, text, update

from beacons.eid import compute_eid
from beacons.signing import signed_headers
from store_server import jobs
from store_server.app import create_app
from store_server.db import sessions, upgrade
from store_server.models import Consent, utcnow
from store_server.redis_store import get_keys, get_redis
from store_server.seed import DemoWorld, seed_demo
from store_server.topology import get_topology
from tests.conftest import free_port, fresh_database, make_config


@dataclass
class Stack:
    """A store server app on its own database and key prefix, with the demo world seeded."""

    app: Flask
    world: DemoWorld
    drop_db: Any

    def close(self) -> None:
        """Delete this stack's keys and database."""
        r = get_redis(self.app)
        try:
            batch = list(r.scan_iter(match=get_keys(self.app).pattern(), count=1000))
            if batch:
                r.delete(*batch)
        except redis_lib.RedisError:
            pass  # a fault test may leave its own Redis down; it is discarded anyway
        self.app.extensions["cm_engine"].dispose()
        self.drop_db()

    def secret(self, scanner: str) -> str:
        """The clear secret of a demo scanner."""
        return self.world.scanners[scanner]["secret"]


def make_stack(
    tmp: Path,
    redis_url: str | None = None,
    db_url: str | None = None,
    **overrides: Any,
) -> Stack:
    """Fresh migrated database, a new key prefix, the demo world and a filled resolver table."""
    if db_url is None:
        db_url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
        upgrade(db_url)
    else:
        drop = lambda: None  # noqa: E731 - the caller owns that database
    if redis_url is None:
        redis_url = os.environ.get("REDIS_URL") or None
    cfg = make_config(tmp, db_url, redis_url)
    cfg.update(overrides)
    app = create_app(cfg)
    with sessions(app)() as db:
        world = seed_demo(db, app.config["DATA_KEY"])
    # Seeding rotated the scanner secrets: forget any cached ones.
    get_topology(app).invalidate()
    jobs.refresh_resolver(app)
    return Stack(app, world, drop)


def backdated_stack(tmp: Path) -> Stack:
    """`make_stack` whose demo consents were given an hour ago, so that sightings stamped in
    the last hour (a scanner's queue, a replayed minute) fall within them."""
    stack = make_stack(tmp)
    with sessions(stack.app)() as db:
        db.execute(update(Consent).values(valid_from=utcnow() - timedelta(hours=1)))
        db.commit()
    jobs.refresh_resolver(stack.app)
    return stack


def batch_body(rows: list[dict[str, Any]], batch_id: str | None = None) -> bytes:
    """A sightings batch as a scanner serialises it."""
    doc = {"batch_id": batch_id or uuid.uuid4().hex, "sent_at": time.time(), "sightings": rows}
    return json.dumps(doc).encode()


def eid_rows(
    emitter: tuple[bytes, int, int], start: float, n: int, rssi: float = -55.0
) -> list[dict[str, Any]]:
    """n sightings of a consented emitter, one per second from `start`."""
    key, k, base = emitter
    return [
        {
            "ts": start + i,
            "kind": "eid",
            "id": compute_eid(key, k, int(start + i) - base).hex(),
            "rssi": rssi,
        }
        for i in range(n)
    ]


def stranger_rows(start: float, n: int, step: float = 1.0) -> list[dict[str, Any]]:
    """n sightings of identifiers nobody consented for, `step` seconds apart from `start`."""
    return [
        {"ts": start + i * step, "kind": "eid", "id": uuid.uuid4().hex[:16], "rssi": -60}
        for i in range(n)
    ]


def post_heartbeat(stack: Stack, scanner: str, **fields: Any) -> Any:
    """A demo scanner's signed heartbeat through the API (adapter up unless said), answered."""
    body = json.dumps({"adapter": "up", "uptime_s": 100, **fields}).encode()
    headers = {**signed(scanner, stack.secret(scanner), body), "Content-Type": "application/json"}
    return stack.app.test_client().post("/api/v1/heartbeat", data=body, headers=headers)


def signed(scanner: str, secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Signature headers for one request."""
    return signed_headers(scanner, secret, body, now)


def redis_state(r: redis_lib.Redis, pattern: str) -> dict[str, Any]:
    """Every key under a pattern with its value, for before/after comparisons."""
    out: dict[str, Any] = {}
    for k in sorted(r.scan_iter(match=pattern, count=1000)):
        t = r.type(k)
        if t == "string":
            out[k] = r.get(k)
        elif t == "hash":
            out[k] = r.hgetall(k)
        elif t == "zset":
            out[k] = r.zrange(k, 0, -1, withscores=True)
        elif t == "stream":
            out[k] = r.xrange(k)
        elif t == "list":
            out[k] = r.lrange(k, 0, -1)
        elif t == "set":
            out[k] = sorted(r.smembers(k))
        else:
            out[k] = t
    return out


def sql_state(app: Flask) -> dict[str, list[str]]:
    """Every row of every table, as text."""
    engine = app.extensions["cm_engine"]
    out: dict[str, list[str]] = {}
    with engine.connect() as c:
        for table in inspect(engine).get_table_names():
            rows = c.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608 - names from schema
            out[table] = sorted(" ".join(str(v) for v in row) for row in rows)
    return out


class RedisServer:
    """A private redis-server on a spare port that a test may kill and restart."""

    def __init__(self, workdir: Path, persistent: bool = True) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server; persistent ones fsync an append-only file, so a restart keeps
        everything that was acknowledged."""
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # a starting server signals nothing: poll its port
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class TcpProxy:
    """A TCP forwarder to a backend that a test can cut (refusing and resetting connections)."""

    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._up = threading.Event()
        self._up.set()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.backend, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        """Accept and forward connections again."""
        self._up.set()

    def close(self) -> None:
        """Stop listening."""
        self._closed = True
        self.cut()
        self._listener.close()


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition other processes bring about (they give no signal to wait on); bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis_lib.RedisError):  # the store may still be coming back
            if predicate():
                return True
        time.sleep(0.05)
    return False
