"""Per-scanner heartbeat rate limit: a daemon's heartbeats always pass, a flood is refused with
429 and leaves no replay-guard key behind (each accepted heartbeat leaves one for
2 x INGEST_MAX_SKEW_S), and a replay spends none of the scanner's quota (real Redis and SQL,
signed HTTP requests)."""

from __future__ import annotations

import json
import time

import pytest
from werkzeug.test import TestResponse

from store_server.api import HEARTBEAT_RATE_PER_MIN
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, signed

pytestmark = pytest.mark.authz

SCANNER = "demo-salon-scanner-1"
# beacons/config.py's shortest heartbeat period: a daemon sends at most 60 / 0.1 + 1 heartbeats
# in one minute's window, however they are spaced within it.
SHORTEST_HEARTBEAT_S = 0.1


def _body(adapter: str = "up") -> bytes:
    return json.dumps({"adapter": adapter, "uptime_s": 100}).encode()


def _post(stack: Stack, body: bytes, headers: dict[str, str] | None = None) -> TestResponse:
    if headers is None:
        headers = signed(SCANNER, stack.secret(SCANNER), body)
    headers = {**headers, "Content-Type": "application/json"}
    return stack.app.test_client().post("/api/v1/heartbeat", data=body, headers=headers)


def _nonces(stack: Stack, scanner_id: int) -> int:
    r, keys = get_redis(stack.app), get_keys(stack.app)
    return sum(1 for _ in r.scan_iter(match=keys.nonce(scanner_id, "*"), count=1000))


def test_over_the_limit_a_heartbeat_is_429_and_leaves_no_nonce(stack):
    r, keys = get_redis(stack.app), get_keys(stack.app)
    sid = get_topology(stack.app).scanner(SCANNER).id
    first = _body()
    headers = signed(SCANNER, stack.secret(SCANNER), first)
    assert _post(stack, first, headers).status_code == 200
    # Fill this minute's window and the next one (the clock may tick between two posts).
    minute = int(time.time() // 60)
    windows = [keys.ratelimit(f"heartbeat:{sid}:{m}") for m in (minute, minute + 1)]
    for w in windows:
        r.set(w, HEARTBEAT_RATE_PER_MIN, ex=120)
    nonces, health = _nonces(stack, sid), r.hgetall(keys.scanner_health(sid))
    limited = _post(stack, _body("down"))
    assert limited.status_code == 429 and limited.is_json
    assert "slow down" in limited.get_json()["error"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert _nonces(stack, sid) == nonces
    assert r.hgetall(keys.scanner_health(sid)) == health  # the refused report is not recorded
    # A replay is refused as one, over the limit or not, and is not counted.
    assert _post(stack, first, headers).status_code == 409
    assert sum(int(r.get(w)) for w in windows) == 2 * HEARTBEAT_RATE_PER_MIN + 1


def test_a_daemon_heartbeating_at_its_shortest_period_passes_and_a_flood_does_not(stack):
    sid = get_topology(stack.app).scanner(SCANNER).id
    cadence = int(60 / SHORTEST_HEARTBEAT_S) + 1
    # One more than two windows can hold: the flood is refused, whenever the minute ticks.
    codes = [_post(stack, _body()).status_code for _ in range(2 * HEARTBEAT_RATE_PER_MIN + 1)]
    assert codes[:cadence] == [200] * cadence
    assert set(codes) == {200, 429}
    assert _nonces(stack, sid) == codes.count(200) <= 2 * HEARTBEAT_RATE_PER_MIN
