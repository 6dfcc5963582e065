"""Test helpers shared across packages: what a scanner sends, what a device hears, and dumps of
every store for privacy checks. Fixtures live in conftest.py; these are plain functions."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import socketio
from sqlalchemy import inspect, text

from beacons.eid import compute_eid
from beacons.signing import signed_headers
from store_server import ingest, resolver


def eid_hex(key: bytes, exponent: int, base: int, t: float) -> str:
    """The identifier an emitter broadcasts at unix time t."""
    return compute_eid(key, exponent, int(t) - base).hex()


def eid_rows(
    emitter: tuple[bytes, int, int], start: float, rssi: float, seconds: int = 4
) -> list[dict[str, Any]]:
    """One sighting per second of an emitter (key, K, time base) from `start` on."""
    key, k, base = emitter
    return [
        {
            "ts": start + d,
            "kind": "eid",
            "id": eid_hex(key, k, base, start + d),
            "rssi": rssi,
            "tx_power": -20,
        }
        for d in range(seconds)
    ]


def post_batch(url: str, scanner: str, secret: str, rows: list[dict]) -> requests.Response:
    """What a scanner daemon sends: one signed sightings batch over real HTTP."""
    body = json.dumps({"batch_id": uuid.uuid4().hex, "sent_at": time.time(), "sightings": rows})
    return requests.post(
        f"{url}/api/v1/sightings",
        data=body.encode(),
        headers=signed_headers(scanner, secret, body.encode()),
        timeout=10,
    )


class DeviceClient:
    """A real python-socketio client on the device namespace that records and acks events."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("event", self._on_event, namespace="/device")
        self.sio.connect(url, namespaces=["/device"], auth={"token": token}, wait_timeout=10)

    def _on_event(self, data: dict) -> None:
        self.events.put(data)
        self.sio.emit("ack", {"event_id": data["event_id"]}, namespace="/device")

    def next(self, timeout: float = 15.0) -> dict:
        """The next event, waiting for it to arrive."""
        return self.events.get(timeout=timeout)


def redis_dump(redis: Any, pattern: str) -> str:
    """Every key matching the pattern with its content, as text."""
    out = []
    for k in redis.scan_iter(match=pattern):
        out.append(f"KEY {k}")
        t = redis.type(k)
        if t == "hash":
            out.extend(f"{f}={v}" for f, v in redis.hgetall(k).items())
        elif t == "string":
            out.append(str(redis.get(k)))
        elif t == "stream":
            out.extend(json.dumps(e) for e in redis.xrange(k))
        elif t == "zset":
            out.extend(redis.zrange(k, 0, -1))
        elif t in ("set", "list"):
            out.extend(redis.smembers(k) if t == "set" else redis.lrange(k, 0, -1))
    return "\n".join(out)


def sql_dump(db: Any) -> str:
    """Every row of every table as text."""
    out = []
    for table in inspect(db.get_bind()).get_table_names():
        for row in db.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608 - schema names
            out.append(
                f"{table}: " + " | ".join(r.hex() if isinstance(r, bytes) else str(r) for r in row)
            )
    return "\n".join(out)


def ingest_rows(
    r: Any,
    keys: Any,
    topo: Any,
    scanner: Any,
    rows: list[dict],
    batch_ttl: int = 3600,
    batch_id: str | None = None,
) -> ingest.Outcome:
    """One batch of sighting rows through ingest.parse_batch and ingest.process, as the API
    runs them (a fresh nonce, the batch's digest, the lookup secret of topo's app); returns what
    ingest did."""
    doc = {"batch_id": batch_id or uuid.uuid4().hex, "sightings": rows}
    _, parsed = ingest.parse_batch(doc, 1000, time.time(), 300)
    outcome, _, _ = ingest.process(
        r, keys, topo, scanner, uuid.uuid4().hex, 600, doc["batch_id"], parsed, batch_ttl,
        digest=ingest.batch_digest(doc),
        resolver_secret=resolver.lookup_secret(topo._app.config["DATA_KEY"]),
    )  # fmt: skip
    return outcome


REPO = Path(__file__).resolve().parents[1]


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python <args>` in a real process of its own, in a scratch directory, with the
    repository importable (a warning a library prints goes to that process's stderr)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def audit_actions(app: Any, subscriber: int) -> list[str]:
    """The audit log's actions about a subscriber (push, revoke, erased), oldest first."""
    from sqlalchemy import select

    from store_server.db import sessions
    from store_server.models import AuditEntry

    with sessions(app)() as db:
        query = select(AuditEntry.action).where(AuditEntry.subscriber_id == subscriber)
        return list(db.scalars(query.order_by(AuditEntry.at, AuditEntry.id)))
