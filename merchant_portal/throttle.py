"""Failed-attempt throttling for sign-in and pairing, so passwords and codes cannot be guessed
at network speed. Failures are counted in Redis, so the limit holds across every store server
worker (and survives a worker restart); Redis sees only an HMAC of each email or address."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable

import redis

from store_server.keys import Keys


class Throttle:
    """At most `limit` failures per key within a sliding window of `window_s` seconds."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        keys: Keys,
        secret: str,
        scope: str,
        limit: int,
        window_s: float,
    ) -> None:
        # A getter rather than a client: the app's client may be replaced (tests, reconnects).
        self._client, self._keys, self._secret = client, keys, secret.encode()
        self.scope, self.limit, self.window_s = scope, limit, window_s

    def blocked(self, key: str, now: float | None = None) -> bool:
        """Whether this key has used up its failures for now."""
        # Wall-clock time: every worker must agree on it, which monotonic clocks do not.
        now = time.time() if now is None else now
        rkey = self._key(key)
        pipe = self._client().pipeline(transaction=True)
        pipe.zremrangebyscore(rkey, "-inf", now - self.window_s)
        pipe.zcard(rkey)
        _aged, count = pipe.execute()
        return count >= self.limit

    def fail(self, key: str, now: float | None = None) -> None:
        """Count one failure."""
        now = time.time() if now is None else now
        rkey = self._key(key)
        pipe = self._client().pipeline(transaction=True)
        # A random member: two failures at the same instant on two workers both count.
        pipe.zadd(rkey, {f"{now!r}:{secrets.token_hex(4)}": now})
        # Only the newest `limit` matter, so a flood of failures cannot grow the set.
        pipe.zremrangebyrank(rkey, 0, -(self.limit + 1))
        pipe.expire(rkey, max(1, math.ceil(self.window_s)))
        pipe.execute()

    def clear(self, key: str) -> None:
        """Forget a key's failures (after a success)."""
        self._client().delete(self._key(key))

    def _key(self, key: str) -> str:
        digest = hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:32]
        return self._keys.failures(self.scope, digest)
