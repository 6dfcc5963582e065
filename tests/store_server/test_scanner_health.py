"""Silent scanners and dark zones: the pure rules, and the live path through the HTTP API, the
jobs and ingest (real Redis and SQL, signed batches and heartbeats), also after Redis lost the
scanners' reports."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from shapely.geometry import box
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from store_server import jobs, scanner_health
from store_server.db import sessions
from store_server.models import AuditEntry, Scanner, Subscriber
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import (
    RedisServer,
    Stack,
    batch_body,
    eid_rows,
    make_stack,
    post_heartbeat,
    signed,
)

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


def test_only_a_scanner_sql_knows_heartbeats_is_lost_without_a_report():
    assert scanner_health.lost({}, reports_health=True)
    assert not scanner_health.lost({}, reports_health=False)  # sightings only: never judged
    assert not scanner_health.lost({"at": "5.0"}, reports_health=True)
    # The placeholder is a heartbeat like any other: silent only once it is too old.
    stand_in = scanner_health.placeholder(1000.0)
    assert not scanner_health.silent(stand_in, 1000.0 + scanner_health.SILENT_AFTER_S)
    assert scanner_health.silent(stand_in, 1000.0 + scanner_health.SILENT_AFTER_S + 1)


def test_a_zone_is_dark_only_when_every_scanner_of_its_own_is_silent():
    own = {"hall": (1, 2), "chair": (3,), "corridor": ()}
    assert scanner_health.dark_zones(own, {1}) == frozenset()
    assert scanner_health.dark_zones(own, {1, 2, 3}) == {"hall", "chair"}


def test_the_scanners_have_reported_up_to_the_earliest_through_of_those_still_heard():
    now = 1000.0
    up = {"at": str(now - 1), "adapter": "up"}
    assert scanner_health.heard_through([], now) is None
    # Older daemons report no `through`: they hold nothing up.
    assert scanner_health.heard_through([up, {}], now) is None
    healths = [{**up, "through": "990.5"}, {**up, "through": "998.0"}, up]
    assert scanner_health.heard_through(healths, now) == 990.5
    # A silent scanner is judged by its zone going dark instead: it holds nothing up either.
    gone = {"at": str(now - 40), "adapter": "up", "through": "950.0"}
    assert scanner_health.heard_through([*healths, gone], now) == 990.5
    down = {**up, "adapter": "down", "through": "900.0"}
    assert scanner_health.heard_through([down], now) is None


def _heartbeat(stack: Stack, scanner: str, adapter: str) -> None:
    res = post_heartbeat(stack, scanner, adapter=adapter)
    assert res.status_code == 200, res.get_json()
    assert res.get_json() == {"ok": True}


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


# --- Redis lost the scanners' reports (restarted empty, or its data otherwise gone) ---


def _lose_health(stack: Stack) -> None:
    """What a Redis restarted empty leaves of the scanners' health: nothing. Deleted key by key
    under this test's prefix (the Redis is shared: never a FLUSHDB)."""
    r, keys = get_redis(stack.app), get_keys(stack.app)
    with sessions(stack.app)() as db:
        ids = db.scalars(select(Scanner.id)).all()
    r.delete(*(keys.scanner_health(sid) for sid in ids), keys.dark_zones())
    assert not any(r.exists(keys.scanner_health(sid)) for sid in ids)


def _health(stack: Stack, scanner: str) -> dict[str, str]:
    sid = get_topology(stack.app).scanner(scanner).id
    return get_redis(stack.app).hgetall(get_keys(stack.app).scanner_health(sid))


def _reports_health(stack: Stack, scanner: str) -> bool:
    with sessions(stack.app)() as db:
        return db.scalar(select(Scanner.reports_health).where(Scanner.name == scanner))


@contextmanager
def _sql_statements(stack: Stack, hook: Callable[[str], None] | None = None) -> Iterator[list]:
    """Every SQL statement the app sends meanwhile (`hook` sees each one first)."""
    engine, seen = stack.app.extensions["cm_engine"], []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if hook is not None:
            hook(statement)
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _writes(statements: list[str]) -> list[str]:
    """All but reads (the scanner lookup may reload the topology once its cache lapses), each
    as its first two words."""
    words = [s.split()[:2] for s in statements]
    return [" ".join(w).upper() for w in words if w[0].upper() != "SELECT"]


def test_a_scanner_gone_for_good_after_redis_lost_its_report_darkens_its_zone(stack):
    app = stack.app
    salon = get_topology(app).scanner(FIRST).venue_id
    _heartbeat(stack, FIRST, "up")
    # Redis loses every scanner's report, and the scanner dies for good: never heard again.
    _lose_health(stack)
    lost_at = time.time()
    assert jobs.publish_dark(app, now=lost_at) == {}
    # Not darkened on the spot: a live scanner's next heartbeat is at most 10 s away.
    assert jobs.publish_dark(app, now=lost_at + scanner_health.SILENT_AFTER_S) == {}
    # SECOND, sightings only, is still not judged: chair 2 stays lit.
    assert jobs.publish_dark(app, now=lost_at + scanner_health.SILENT_AFTER_S + 1) == {
        salon: ["chair-1"]
    }
    assert scanner_health.read(get_redis(app), get_keys(app)) == {salon: frozenset({"chair-1"})}


def test_a_scanner_that_never_heartbeats_is_never_judged_even_after_a_redis_loss(stack):
    app = stack.app
    client = app.test_client()
    # SECOND posts sightings only (an older daemon, a bench scanner).
    body = batch_body(eid_rows(stack.world.emitters["alice"], time.time(), 1, -60.0))
    assert (
        client.post(
            "/api/v1/sightings", data=body, headers=signed(SECOND, stack.secret(SECOND), body)
        ).status_code
        == 200
    )
    assert not _reports_health(stack, SECOND)
    _lose_health(stack)
    later = time.time() + 3600
    assert jobs.publish_dark(app, now=later) == {}
    assert jobs.publish_dark(app, now=later + 3600) == {}
    assert _health(stack, SECOND) == {}  # no placeholder for a scanner that never reported


def test_a_live_scanner_whose_report_was_lost_is_not_dark_once_it_heartbeats_again(stack):
    app = stack.app
    _heartbeat(stack, FIRST, "up")
    _lose_health(stack)
    # The jobs notice the loss 30 s before the scanner's next heartbeat (a slow uplink).
    noticed = time.time() - 30
    assert jobs.publish_dark(app, now=noticed) == {}
    stand_in = _health(stack, FIRST)
    assert stand_in["restored"] == "1" and float(stand_in["at"]) == noticed
    _heartbeat(stack, FIRST, "up")
    beat = _health(stack, FIRST)
    assert "restored" not in beat and beat["adapter"] == "up" and float(beat["at"]) > noticed
    # The placeholder would be 50 s old by now; the heartbeat replacing it is 20 s old.
    assert jobs.publish_dark(app, now=time.time() + 20) == {}
    assert _health(stack, FIRST) == beat


def test_a_heartbeat_landing_between_the_jobs_read_and_write_is_not_overwritten(stack, monkeypatch):
    app = stack.app
    r = get_redis(app)
    _heartbeat(stack, FIRST, "up")
    _lose_health(stack)

    class BeatAfterTheRead:
        """The app's Redis, with FIRST's heartbeat arriving just after the jobs read."""

        def pipeline(self, transaction: bool = True) -> Any:
            pipe = r.pipeline(transaction=transaction)
            if not transaction:
                read = pipe.execute

                def then_beat() -> list:
                    answers = read()
                    _heartbeat(stack, FIRST, "down")
                    return answers

                pipe.execute = then_beat
            return pipe

    # Only this thread's: the app's own jobs loop runs meanwhile, and its reads would make the
    # heartbeat arrive before the round under test (it failed about once in a full run).
    me = threading.get_ident()
    monkeypatch.setattr(
        jobs, "get_redis", lambda _app: BeatAfterTheRead() if threading.get_ident() == me else r
    )
    noticed = time.time() - 20
    # This round judged what it read (no report yet): the placeholder, not silent.
    assert jobs.publish_dark(app, now=noticed) == {}
    monkeypatch.undo()
    beat = _health(stack, FIRST)
    assert beat["adapter"] == "down" and "restored" not in beat
    assert float(beat["at"]) > noticed
    # The report that arrived stands: its adapter is down, so the next round darkens chair 1.
    salon = get_topology(app).scanner(FIRST).venue_id
    assert jobs.publish_dark(app) == {salon: ["chair-1"]}


def test_the_first_heartbeat_tells_sql_and_the_next_ones_do_not(stack):
    assert not _reports_health(stack, FIRST)
    with _sql_statements(stack) as statements:
        _heartbeat(stack, FIRST, "up")
    assert _writes(statements) == ["UPDATE SCANNERS"] and _reports_health(stack, FIRST)
    assert _health(stack, FIRST)["in_sql"] == "1"
    with _sql_statements(stack) as statements:
        for _ in range(3):
            _heartbeat(stack, FIRST, "up")
    assert _writes(statements) == []
    # After a Redis loss, the first heartbeat asks once more (the row is left as it was) ...
    _lose_health(stack)
    with _sql_statements(stack) as statements:
        _heartbeat(stack, FIRST, "up")
        _heartbeat(stack, FIRST, "up")
    assert _writes(statements) == ["UPDATE SCANNERS"] and _reports_health(stack, FIRST)
    # ... unless the jobs restored it first: their placeholder says SQL knows already.
    _lose_health(stack)
    jobs.publish_dark(stack.app)
    with _sql_statements(stack) as statements:
        _heartbeat(stack, FIRST, "up")
    assert _writes(statements) == []


def test_a_heartbeat_sql_cannot_record_is_accepted_and_sql_is_told_at_the_next(stack, caplog):
    def fail(statement: str) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            raise OperationalError(statement, {}, ConnectionError("server closed the connection"))

    with _sql_statements(stack, fail), caplog.at_level(logging.WARNING, "store_server.api"):
        _heartbeat(stack, FIRST, "down")  # asserts 200 {"ok": true}
    # The report stands in Redis, where silence is judged; SQL is to be told again.
    beat = _health(stack, FIRST)
    assert beat["adapter"] == "down" and "in_sql" not in beat
    assert not _reports_health(stack, FIRST)
    sid = get_topology(stack.app).scanner(FIRST).id
    assert [rec.getMessage() for rec in caplog.records if rec.name == "store_server.api"] == [
        f"scanner {sid} heartbeats, not recorded in SQL yet (OperationalError)"
    ]
    salon = get_topology(stack.app).scanner(FIRST).venue_id
    assert jobs.publish_dark(stack.app) == {salon: ["chair-1"]}
    _heartbeat(stack, FIRST, "up")
    assert _reports_health(stack, FIRST) and _health(stack, FIRST)["in_sql"] == "1"


@pytest.mark.faults
def test_a_redis_restarted_empty_still_darkens_the_zone_of_a_dead_scanner(tmp_path: Path):
    """A real redis-server without persistence, killed and started again: everything is gone."""
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    stack = make_stack(tmp_path, redis_url=server.url)
    try:
        app = stack.app
        salon = get_topology(app).scanner(FIRST).venue_id
        _heartbeat(stack, FIRST, "up")
        _heartbeat(stack, SECOND, "up")
        server.kill()
        server.start()
        assert get_redis(app).dbsize() == 0
        # The jobs' first round after the restart, as if it ran 36 s ago: FIRST never reports
        # again, SECOND heartbeats meanwhile.
        assert jobs.publish_dark(app, now=time.time() - scanner_health.SILENT_AFTER_S - 1) == {}
        _heartbeat(stack, SECOND, "up")
        assert jobs.publish_dark(app) == {salon: ["chair-1"]}
        assert _health(stack, FIRST)["restored"] == "1" and "restored" not in _health(stack, SECOND)
    finally:
        stack.close()
        server.kill()
