"""Per-scanner ingest rate limit: counted after authentication, 429 with Retry-After, and the
refused batch is not lost (its retry is processed once the window allows)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from beacons.signing import signed_headers
from store_server.redis_store import get_keys, get_redis
from store_server.seed import seed_demo
from store_server.topology import get_topology
from tests.helpers import eid_rows

pytestmark = pytest.mark.authz

SCANNER = "demo-car-scanner"


def post(client, secret: str, body: bytes, scanner: str = SCANNER):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/sightings", data=body, headers=signed_headers(scanner, secret, body)
    )


def test_over_the_limit_is_429_and_the_retry_is_processed_later(app, db):
    world = seed_demo(db, app.config["DATA_KEY"])
    secret = world.scanners[SCANNER]["secret"]
    client = app.test_client()
    app.config["INGEST_RATE_PER_MIN"] = 3
    try:
        bodies = [
            json.dumps({"batch_id": uuid.uuid4().hex, "sightings": eid_rows(
                world.emitters["bob"], time.time() + 1, -50)}).encode()
            for _ in range(2)
        ]  # fmt: skip
        assert post(client, secret, bodies[0]).status_code == 200
        # Fill this minute's window and the next one (the clock may tick between two posts).
        r, keys = get_redis(app), get_keys(app)
        scanner_id = get_topology(app).scanner(SCANNER).id
        minute = int(time.time() // 60)
        for m in (minute, minute + 1):
            r.set(keys.ratelimit(f"ingest:{scanner_id}:{m}"), 3, ex=120)
        limited = post(client, secret, bodies[1])
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 61
        assert "slow down" in limited.get_json()["error"]
        # Another scanner has its own quota.
        other = world.scanners["demo-salon-scanner-1"]["secret"]
        body = json.dumps({"batch_id": uuid.uuid4().hex, "sightings": []}).encode()
        assert post(client, other, body, "demo-salon-scanner-1").status_code == 200
        # The refused batch was not claimed: once allowed, it is processed, not a duplicate.
        app.config["INGEST_RATE_PER_MIN"] = 0
        retry = post(client, secret, bodies[1])
        assert retry.status_code == 200 and retry.get_json()["duplicate"] is False
    finally:
        app.config["INGEST_RATE_PER_MIN"] = 6000
