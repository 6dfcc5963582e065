"""Silent scanners and dark zones: the pure rules, and the live path through the HTTP API, the
jobs and ingest (real Redis and SQL, signed batches and heartbeats)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from shapely.geometry import box
from sqlalchemy import select

from store_server import jobs, scanner_health
from store_server.db import sessions
from store_server.models import AuditEntry, Subscriber
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, signed

FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"


def test_each_scanner_belongs_to_the_zone_holding_it_or_to_none():
    zones = {"chair-1": box(0, 0, 2, 2), "chair-2": box(5, 0, 7, 2)}
    scanners = {1: (1.0, 1.0), 2: (7.5, 1.0), 3: (3.5, 1.0), 4: (2.0, 1.0)}
    # 3 stands 1.5 m from both chairs (a corridor's): nobody's own.
    assert scanner_health.zone_scanners(zones, scanners) == {"chair-1": (1, 4), "chair-2": (2,)}
    assert scanner_health.zone_scanners({}, scanners) == {}


def test_a_scanner_is_silent_when_its_adapter_is_down_or_its_heartbeats_stopped():
    now = 1000.0
    assert not scanner_health.silent({}, now)  # never reported: not judged
    assert not scanner_health.silent({"at": str(now - 30), "adapter": "up"}, now)
    assert scanner_health.silent({"at": str(now - 36), "adapter": "up"}, now)
    assert scanner_health.silent({"at": str(now), "adapter": "down"}, now)


def test_a_zone_is_dark_only_when_every_scanner_of_its_own_is_silent():
    own = {"hall": (1, 2), "chair": (3,), "corridor": ()}
    assert scanner_health.dark_zones(own, {1}) == frozenset()
    assert scanner_health.dark_zones(own, {1, 2, 3}) == {"hall", "chair"}


def _heartbeat(stack: Stack, scanner: str, adapter: str) -> None:
    body = json.dumps({"adapter": adapter, "uptime_s": 100}).encode()
    headers = {**signed(scanner, stack.secret(scanner), body), "Content-Type": "application/json"}
    res = stack.app.test_client().post("/api/v1/heartbeat", data=body, headers=headers)
    assert res.status_code == 200, res.get_json()


def _second(stack: Stack, at: float, rssi: dict[str, float]) -> None:
    """One second of alice as each scanner hears her, through the API, then a sweeper round."""
    client = stack.app.test_client()
    for scanner, level in rssi.items():
        body = batch_body(eid_rows(stack.world.emitters["alice"], at, 1, level))
        headers = signed(scanner, stack.secret(scanner), body)
        assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    jobs.sweep_once(stack.app, now=at + 0.5)


def test_a_silent_chair_scanner_ends_the_presence_and_the_neighbour_cannot_move_it(stack):
    app = stack.app
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    salon = topo.scanner(FIRST).venue_id
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))
    _heartbeat(stack, FIRST, "up")
    _heartbeat(stack, SECOND, "up")
    start = time.time()
    for s in range(8):
        _second(stack, start + s, {FIRST: -52.0, SECOND: -66.0})
    assert r.hget(keys.occupants(salon), str(alice)) == "chair-1"
    # Chair 1's scanner loses its radio; chair 2's still hears her, now loud enough to tempt
    # an estimate next door (the one scanner left puts her nearest to itself).
    _heartbeat(stack, FIRST, "down")
    assert jobs.publish_dark(app) == {salon: ["chair-1"]}
    topo.dark.clear()
    for s in range(8, 40):
        _second(stack, start + s, {SECOND: -60.0})
    with sessions(app)() as db:
        audit = db.execute(
            select(AuditEntry.action, AuditEntry.reason)
            .where(AuditEntry.subscriber_id == alice)
            .order_by(AuditEntry.id)
        ).all()
    pushes = [a for a in audit if a[0] in ("push", "revoke")]
    assert pushes[-1] == ("revoke", "scanner_silent") and len(pushes) == 2, audit
    state = json.loads(r.hget(keys.tracks(salon), str(alice)))
    assert state["p"].get("zone") is None and state["p"]["held"] == "chair-1"
    assert r.hget(keys.occupants(salon), str(alice)) is None
    # The radio is back: she is found in her chair again.
    _heartbeat(stack, FIRST, "up")
    assert jobs.publish_dark(app) == {}
    topo.dark.clear()
    for s in range(40, 50):
        _second(stack, start + s, {FIRST: -52.0, SECOND: -66.0})
    assert r.hget(keys.occupants(salon), str(alice)) == "chair-1"


def test_dark_zones_expire_unless_the_jobs_publish_them_again(stack):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    salon = get_topology(app).scanner(FIRST).venue_id
    _heartbeat(stack, FIRST, "down")
    # The report itself never expires: a scanner silent for a week is still silent.
    assert r.ttl(keys.scanner_health(get_topology(app).scanner(FIRST).id)) == -1
    assert jobs.publish_dark(app) == {salon: ["chair-1"]}
    assert scanner_health.read(r, keys) == {salon: frozenset({"chair-1"})}
    assert 0 < r.pttl(keys.dark_zones()) <= scanner_health.DARK_TTL_S * 1000
    _heartbeat(stack, FIRST, "up")
    jobs.publish_dark(app)
    assert scanner_health.read(r, keys) == {} and not r.exists(keys.dark_zones())


class _GatedRedis:
    """A Redis client whose reads of the dark zones wait for the test to open the gate (a slow
    first read), then answer from the real one or fail as a lost connection would."""

    def __init__(self, real: redis.Redis, fail: bool = False) -> None:
        self._real, self._fail = real, fail
        self.reading, self.gate = threading.Event(), threading.Event()
        self.reads = 0

    def hgetall(self, key: str) -> dict:
        """The real answer once the gate is open."""
        self.reads += 1
        self.reading.set()
        self.gate.wait(30)
        if self._fail:
            raise redis.ConnectionError("connection lost mid-read")
        return self._real.hgetall(key)


@pytest.mark.parametrize("first_read_fails", [False, True])
def test_before_the_first_read_of_the_dark_zones_callers_wait_for_it(stack, first_read_fails):
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    salon = get_topology(app).scanner(FIRST).venue_id
    _heartbeat(stack, FIRST, "down")
    assert jobs.publish_dark(app) == {salon: ["chair-1"]}
    cache = scanner_health.DarkCache()  # a worker just started
    first, second = _GatedRedis(r, fail=first_read_fails), _GatedRedis(r)
    second.gate.set()
    got: dict[str, object] = {}

    def batch(name: str, client: _GatedRedis) -> None:
        try:
            got[name] = cache.get(client, keys, salon)
        except redis.ConnectionError:
            got[name] = "failed"

    a = threading.Thread(target=batch, args=("first", first))
    a.start()
    assert first.reading.wait(10)  # the process's first read is under way
    b = threading.Thread(target=batch, args=("second", second))
    b.start()
    # A batch folding meanwhile must not hear that no zone is dark: it waits for that read.
    b.join(0.5)
    assert b.is_alive(), got
    first.gate.set()
    a.join(10)
    b.join(10)
    assert got["first"] == ("failed" if first_read_fails else {"chair-1"})
    assert got["second"] == {"chair-1"}
    # Served by the first read; read again only because that one failed.
    assert second.reads == (1 if first_read_fails else 0)
