"""The resolver table: every consented emitter's identifiers, whatever its rotation exponent, for
as long as the table serves, under their keyed hashes only (real Redis and SQL for the job, plain
data for the builder)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from beacons.eid import compute_eid
from store_server import jobs, services
from store_server.db import sessions
from store_server.models import Subscriber
from store_server.redis_store import get_keys, get_redis
from store_server.resolver import (
    TICKET_FIELD,
    VERSION_FIELD,
    build_table,
    lookup_key,
    lookup_keys,
    lookup_secret,
)
from tests.faults.support import Stack, make_stack

KEY = bytes(range(16))
SECRET = lookup_secret("test-data-key")
CONSENT = {"id": 1, "m": None, "share": "playlist", "stats": False, "from": 0, "until": None}


@pytest.mark.parametrize("exponent", [0, 2, 4, 5, 10, 15])
@pytest.mark.parametrize("periods", [0, 2])
def test_the_table_covers_its_window_until_it_is_rebuilt(exponent: int, periods: int) -> None:
    now, base, lasts = 1_767_225_600.7, 1_767_000_000, 120.0
    table = build_table(SECRET, [(7, 3, KEY, exponent, base)], {3: [CONSENT]}, now, periods, lasts)
    step = 1 << exponent
    for u in range(int(now), int(now + lasts) + 1):
        for d in range(-periods, periods + 1):
            eid = compute_eid(KEY, exponent, u - base + d * step).hex()
            assert lookup_key(SECRET, eid) in table, (u - now, d)
            assert eid not in table


def test_lookup_keys_are_keyed_hashes_that_never_meet_the_tables_own_fields() -> None:
    eid, beacon = "0123456789abcdef", "f" * 40
    key = lookup_key(SECRET, eid)
    assert len(key) == 32 and int(key, 16) >= 0
    # HMAC-SHA256 under the secret, its first 16 bytes: pinned, so both forms can be checked.
    assert key == hmac.new(SECRET, eid.encode(), hashlib.sha256).hexdigest()[:32]
    assert key == lookup_key(SECRET, eid)  # stable: ingest finds what the rebuild wrote
    assert lookup_keys(SECRET, [eid, beacon]) == [key, lookup_key(SECRET, beacon)]
    # Another deployment (DATA_KEY) hashes the same identifier elsewhere.
    assert key != lookup_key(lookup_secret("another-data-key"), eid)
    assert eid not in key and key not in (VERSION_FIELD, TICKET_FIELD)


@pytest.fixture
def every_minute(tmp_path: Path) -> Iterator[Stack]:
    """A store server whose resolver job runs at the default pace, once a minute."""
    s = make_stack(tmp_path, RESOLVER_REFRESH_S=60.0)
    yield s
    s.close()


def test_a_short_rotation_still_resolves_when_the_next_rebuild_is_due(
    every_minute: Stack,
) -> None:
    # A 16 s rotation (K=4) and the default window of two periods either side: the table
    # held the next 48 s at most, and the job rebuilds it every 60 s, so for a quarter of
    # every minute (more with a shorter rotation) no consented emitter of that kind resolved.
    app = every_minute.app
    with sessions(app)() as db:
        alice = db.scalar(select(Subscriber).where(Subscriber.directory_id == "demo:alice"))
        _, key = services.provision_emitter(db, app.config["DATA_KEY"], alice, exponent=4)
        db.commit()
    jobs.refresh_resolver(app)
    r, table = get_redis(app), get_keys(app).resolver()
    secret = lookup_secret(app.config["DATA_KEY"])
    now = int(time.time())
    due = now + int(app.config["RESOLVER_REFRESH_S"]) + 1
    missing = [
        u - now
        for u in range(now, due + 1)
        if not r.hexists(table, lookup_key(secret, compute_eid(key, 4, u).hex()))
    ]
    assert missing == []
