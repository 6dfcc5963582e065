"""Short pairing codes: staff read one off the portal and type it on the device, once.

The code maps to a device id only (never to a token): the token is issued when the code is
redeemed, so no bearer token waits anywhere in clear. Codes live in Redis, so a code shown by one
store server worker is redeemed on whichever worker the device reaches; Redis sees only an HMAC
of each code, never the code itself.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable

import redis

from store_server.keys import Keys

# No 0/O, 1/I/L: read aloud or off a screen without mistakes.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 8
TTL_S = 600.0


class PairingCodes:
    """Single-use, expiring codes for pairing devices, shared by every worker through Redis."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        keys: Keys,
        secret: str,
        ttl_s: float = TTL_S,
    ) -> None:
        # A getter rather than a client: the app's client may be replaced (tests, reconnects).
        self._client, self._keys, self._secret = client, keys, secret.encode()
        self.ttl_s = ttl_s

    def issue(self, device_id: int, now: float | None = None) -> str:
        """A new code for a device; any earlier code of that device stops working."""
        now = time.time() if now is None else now
        code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        code_key = self._keys.pairing_code(self._digest(code))
        device_key = self._keys.pairing_device(device_id)
        # The expiry travels in the value too, so `now` decides (Redis' TTL only cleans up).
        value = f"{device_id}:{now + self.ttl_s!r}"
        ttl = max(1, math.ceil(self.ttl_s))

        def point_to_new(pipe: redis.client.Pipeline) -> None:
            pipe.set(code_key, value, ex=ttl)
            pipe.set(device_key, code_key, ex=ttl)

        self._replace(device_key, point_to_new)
        return code

    def cancel(self, device_id: int) -> None:
        """Void the device's unredeemed code, if any (revoked or re-keyed: a code shown before
        must not bring it back)."""
        device_key = self._keys.pairing_device(device_id)
        self._replace(device_key, lambda pipe: pipe.delete(device_key))

    def _replace(self, device_key: str, then: Callable[[redis.client.Pipeline], object]) -> None:
        """Delete the code the device's pointer names, then `then` in the same transaction.

        WATCH on the pointer: two concurrent issues (or an issue and a cancel) cannot leave a
        live code behind."""

        def run(pipe: redis.client.Pipeline) -> None:
            previous = pipe.get(device_key)
            pipe.multi()
            if previous:
                pipe.delete(previous)
            then(pipe)

        self._client().transaction(run, device_key)

    def redeem(self, code: str, now: float | None = None) -> int | None:
        """The device id the code was issued for, consuming it; None if unknown or expired."""
        now = time.time() if now is None else now
        code = normalise(code)
        if not code:
            return None
        code_key = self._keys.pairing_code(self._digest(code))
        # GET and DEL in one MULTI: of two workers redeeming at once, exactly one sees the value.
        pipe = self._client().pipeline(transaction=True)
        pipe.get(code_key)
        pipe.delete(code_key)
        value, _deleted = pipe.execute()
        if not value:
            return None
        device_id, expires = value.split(":", 1)
        return int(device_id) if float(expires) > now else None

    def _digest(self, code: str) -> str:
        return hmac.new(self._secret, code.encode(), hashlib.sha256).hexdigest()[:32]


def normalise(code: str) -> str:
    """Upper-case, without spaces or dashes people type between groups."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def grouped(code: str) -> str:
    """The code as two groups of four, easier to read out."""
    return f"{code[:4]}-{code[4:]}"
