"""No identifier a scanner heard reaches Redis: every command Redis receives while batches go
through the HTTP API (the claim, the resolver lookups, a re-resolution after a resolver rebuild,
the rebuild itself), as MONITOR and a zero-threshold SLOWLOG see them on a Redis of the test's
own, carries neither a non-consented person's identifier nor a consented emitter's raw EID, only
the resolver table's keyed hashes of them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import update

from store_server import ingest, jobs, resolver
from store_server.db import sessions
from store_server.models import Consent, utcnow
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import (
    RedisServer,
    Stack,
    batch_body,
    eid_rows,
    make_stack,
    signed,
    stranger_rows,
)

pytestmark = pytest.mark.privacy

SCANNER = "demo-salon-scanner-1"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: its slowlog is reconfigured, the shared one's never."""
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    yield server
    server.kill()


@pytest.fixture
def stack(tmp_path: Path, own_redis: RedisServer) -> Iterator[Stack]:
    """The demo world on that Redis, its consents given an hour ago (sightings of the last
    minute fall within them)."""
    s = make_stack(tmp_path, redis_url=own_redis.url)
    with sessions(s.app)() as db:
        db.execute(update(Consent).values(valid_from=utcnow() - timedelta(hours=1)))
        db.commit()
    jobs.refresh_resolver(s.app)
    yield s
    s.close()


class Monitor:
    """Every command the server runs (scripts' own calls too), as MONITOR prints it, until
    `stop`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[str] = []
        self._mark = f"monitor-end-{uuid.uuid4().hex}"
        self._conn = redis_lib.Redis.from_url(url, decode_responses=True)
        self._monitor = self._conn.monitor()
        self._monitor.__enter__()  # MONITOR is sent (and acknowledged) here
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            cmd = self._monitor.next_command()
            self.lines.append(cmd["command"])
            if self._mark in cmd["command"]:
                return

    def stop(self) -> list[str]:
        with redis_lib.Redis.from_url(self.url) as other:
            other.echo(self._mark)
        self._thread.join(10)
        assert not self._thread.is_alive(), "MONITOR never saw the end mark"
        self._monitor.__exit__(None, None, None)
        self._conn.close()
        return self.lines


def ibeacon_rows(start: float, n: int) -> list[dict[str, Any]]:
    """n sightings of iBeacons nobody consented for."""
    return [
        {
            "ts": start + i,
            "kind": "ibeacon",
            "id": uuid.uuid4().hex + uuid.uuid4().hex[:8],
            "rssi": -62,
        }
        for i in range(n)
    ]


def test_no_heard_identifier_reaches_redis_only_their_keyed_hashes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = stack.app
    r = get_redis(app)
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 100_000)
    start = time.time() - 20
    alice = eid_rows(stack.world.emitters["alice"], start, 8, rssi=-50)
    strangers = stranger_rows(start, 6) + ibeacon_rows(start, 4)
    # Two batches: the second finds the first's tracking state, and a resolver rebuild lands
    # while it is folded, so it resolves its identifiers again (ingest._fold's second lookup).
    batches = [alice[:4] + strangers[:5], alice[4:] + strangers[5:]]
    resolve, rebuilt = ingest._resolve, []

    def rebuild_meanwhile(*args: Any) -> Any:
        if len(batches_sent) == 2 and not rebuilt:
            rebuilt.append(jobs.refresh_resolver(app))
        return resolve(*args)

    monkeypatch.setattr(ingest, "_resolve", rebuild_meanwhile)
    batches_sent: list[int] = []
    client = app.test_client()
    r.slowlog_reset()
    monitor = Monitor(app.config["REDIS_URL"])
    for rows in batches:
        batches_sent.append(len(rows))
        body = batch_body(rows)
        headers = {
            **signed(SCANNER, stack.secret(SCANNER), body),
            "Content-Type": "application/json",
        }
        resp = client.post("/api/v1/sightings", data=body, headers=headers)
        assert resp.status_code == 200, resp.data
        assert resp.get_json() == {"accepted": len(rows), "duplicate": False}
    lines = monitor.stop()
    slowlog = r.slowlog_get(-1)
    assert rebuilt, "no resolver rebuild landed during the second batch"

    # Not vacuous: alice resolved (and was resolved again after the rebuild), the rest dropped.
    keys = get_keys(app)
    venue_id = get_topology(app).scanner(SCANNER).venue_id
    assert r.hlen(keys.tracks(venue_id)) == 1
    assert int(r.get(keys.dropped(venue_id))) == len(strangers)

    # Nothing Redis ran, nor anything its slowlog keeps, names anyone the scanner heard.
    assert len(slowlog) > len(batches)
    kept = [c.decode() if isinstance(c, bytes) else str(c) for c in (e["command"] for e in slowlog)]

    def naming(ident: str) -> list[str]:
        return [line for line in lines + kept if ident in line][:1]

    assert {row["id"]: naming(row["id"]) for row in strangers if naming(row["id"])} == {}
    assert {row["id"]: naming(row["id"]) for row in alice if naming(row["id"])} == {}

    # Looked up by their keyed hashes: what the resolver table is keyed by.
    secret = resolver.lookup_secret(app.config["DATA_KEY"])
    hashed = {resolver.lookup_key(secret, row["id"]) for row in alice}
    assert any(h in line for line in lines for h in hashed), "no resolver lookup was seen"
    assert sum(1 for line in lines if "HMGET" in line.upper() and keys.resolver() in line) >= 3
