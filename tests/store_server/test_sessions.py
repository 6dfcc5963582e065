"""The sign-in allow-list in Redis (store_server/sessions.py) stays as large as the sign-ins that
are live, however often one person signs in and lets their sessions idle out."""

from __future__ import annotations

import secrets
import time

from store_server.redis_store import get_keys
from store_server.sessions import SessionRegistry, staff_principal


def test_signing_in_again_drops_the_ids_of_sessions_that_idled_out(app, redis):
    registry = SessionRegistry(lambda: redis, get_keys(app), secrets.token_bytes(16))
    principal = staff_principal(10_000 + secrets.randbelow(10_000))
    index = get_keys(app).sessions_of(registry._digest("principal", principal))
    for _ in range(3):
        registry.start(principal, idle_s=1)  # closed tabs: never signed out
    idled = sorted(redis.smembers(index))
    assert len(idled) == 3
    # Wait for Redis to expire them, as it does a session nobody uses for its idle lifetime.
    deadline = time.monotonic() + 10
    while any(redis.exists(get_keys(app).session(d)) for d in idled):
        assert time.monotonic() < deadline, "the sessions never expired"
        time.sleep(0.05)

    sid = registry.start(principal, idle_s=60)
    assert sorted(redis.smembers(index)) == [registry._digest("sid", sid)]
    assert registry.check(sid, principal, time.time(), 60)
    assert registry.end_all(principal) == 1
